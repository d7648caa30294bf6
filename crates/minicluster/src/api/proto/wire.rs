//! The protobuf wire format, read: keys, varints, fixed numbers and
//! length-delimited bytes (protobuf.dev/programming-guides/encoding). Small
//! enough to keep by hand; what each field means comes from the schema.

use super::ProtoError;

/// One field value as it sits on the wire.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// A 32-bit number: no served kind has one (no float32), so only skipped.
    Fixed32,
}

/// Every `(field number, value)` of one message, in wire order.
pub(super) fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ProtoError> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        let key = r.varint()?;
        let number =
            u32::try_from(key >> 3)
                .ok()
                .filter(|n| *n > 0)
                .ok_or(ProtoError::Malformed {
                    at: r.pos,
                    what: "field number",
                })?;
        let value = match key & 7 {
            0 => Wire::Varint(r.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(r.array()?)),
            2 => {
                let len = usize::try_from(r.varint()?).map_err(|_| r.malformed("length"))?;
                Wire::Bytes(r.take(len)?)
            }
            5 => {
                r.array::<4>()?;
                Wire::Fixed32
            }
            _ => return Err(r.malformed("wire type (groups are not used by Kubernetes)")),
        };
        out.push((number, value));
    }
    Ok(out)
}

/// The varints packed in one length-delimited value (a packed repeated field).
pub(super) fn packed_varints(buf: &[u8]) -> Result<Vec<u64>, ProtoError> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        out.push(r.varint()?);
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn malformed(&self, what: &'static str) -> ProtoError {
        ProtoError::Malformed { at: self.pos, what }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.malformed("varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| self.malformed("length past the end"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        let bytes = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(bytes);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // 1: varint 300 (ac 02); 2: bytes "hi"; 3: fixed64 1; 4: fixed32 2.
        let buf = [
            0x08, 0xac, 0x02, 0x12, 0x02, b'h', b'i', 0x19, 1, 0, 0, 0, 0, 0, 0, 0, 0x25, 2, 0, 0,
            0,
        ];
        let f = fields(&buf).expect("decodes");
        assert!(matches!(f[0], (1, Wire::Varint(300))));
        assert!(matches!(f[1], (2, Wire::Bytes(b"hi"))));
        assert!(matches!(f[2], (3, Wire::Fixed64(1))));
        assert!(matches!(f[3], (4, Wire::Fixed32)));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        for buf in [
            &[0x08][..],
            &[0x12, 0x05, b'a'],
            &[0x80; 11],
            &[0x0b],
            &[0x00],
        ] {
            assert!(fields(buf).is_err(), "{buf:?}");
        }
        assert_eq!(packed_varints(&[1, 0x96, 0x01]).expect("packed"), [1, 150]);
    }
}
