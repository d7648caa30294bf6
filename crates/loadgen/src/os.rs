//! The one operating-system knob rolltest turns on its own threads.

/// Sets the calling thread's nice value (best effort: raising priority
/// needs root or CAP_SYS_NICE; without it nothing changes).
///
/// The load generator asks for -10, so the pods, the control plane and the
/// proxy that share the machine with it in embedded mode do not make it send
/// late; the records writer asks for 10, so writing a batch (a millisecond or
/// two) never runs while requests are due.
pub fn set_thread_nice(nice: i32) {
    // SAFETY: gettid and setpriority take plain integers and only affect this thread.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}
