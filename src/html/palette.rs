//! The cause palette: each cause's failure slot, name and colour, the same
//! in the report's swimlanes, chips and legends and in compare.html.

use rolltest_core::model::Cause;

use super::{Rgb, escape, hex};

/// Failure slots: one per [`Cause::ALL`] entry, then unattributed.
pub const SLOTS: usize = Cause::ALL.len() + 1;

/// The failure slot of a cause: its index in [`Cause::ALL`], unattributed last.
pub fn cause_slot(cause: Option<Cause>) -> usize {
    cause
        .and_then(|c| Cause::ALL.iter().position(|x| *x == c))
        .unwrap_or(Cause::ALL.len())
}

/// The cause of a failure slot.
pub fn slot_cause(slot: usize) -> Option<Cause> {
    Cause::ALL.get(slot).copied()
}

/// Every slot's cause in slot order, unattributed (`None`) last: the order
/// of stacks and legends.
pub fn slot_causes() -> impl Iterator<Item = Option<Cause>> {
    (0..SLOTS).map(slot_cause)
}

/// A cause's name, `unattributed` for none.
pub fn cause_label(cause: Option<Cause>) -> &'static str {
    Cause::name_of(cause)
}

/// A cause's colour (swimlanes, chips and legend).
pub fn cause_color(cause: Option<Cause>) -> Rgb {
    match cause {
        Some(Cause::EndpointLag) => (106, 27, 154),
        Some(Cause::KilledInFlight) => (216, 67, 21),
        Some(Cause::NotReady) => (0, 131, 143),
        Some(Cause::Capacity) => (21, 101, 192),
        Some(Cause::KeepaliveRace) => (175, 130, 0),
        Some(Cause::Unexplained) => (55, 71, 79),
        None => (158, 158, 158),
    }
}

/// A cause's colour chip followed by its name (styled by `.chip` in
/// [`EVIDENCE_CSS`](super::EVIDENCE_CSS)).
pub fn chip(cause: Option<Cause>) -> String {
    labelled_chip(cause, cause_label(cause))
}

/// The chip of a cause named in a file (summary.json): coloured as the cause
/// the name parses to (grey when none), the name as given, escaped.
pub fn named_chip(name: &str) -> String {
    labelled_chip(Cause::parse(name), name)
}

fn labelled_chip(cause: Option<Cause>, label: &str) -> String {
    format!(
        "<span class=\"chip\" style=\"background:{}\"></span>{}",
        hex(cause_color(cause)),
        escape(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip() {
        for c in Cause::ALL {
            assert_eq!(slot_cause(cause_slot(Some(c))), Some(c));
        }
        assert_eq!(slot_cause(cause_slot(None)), None);
        assert_eq!(cause_slot(None), SLOTS - 1);
        let order: Vec<_> = slot_causes().collect();
        assert_eq!(order.len(), SLOTS);
        assert_eq!(order[..SLOTS - 1], Cause::ALL.map(Some));
        assert_eq!(order[SLOTS - 1], None);
    }

    #[test]
    fn a_named_chip_is_the_causes_chip() {
        for c in Cause::ALL {
            assert_eq!(named_chip(c.as_str()), chip(Some(c)));
        }
        assert_eq!(named_chip("unattributed"), chip(None));
        assert!(named_chip("<b>").ends_with("&lt;b&gt;"));
    }
}
