//! The few Linux calls the connection pool makes itself: an epoll set of its
//! own for the connections' sockets, and `recvmsg` with the kernel's receive
//! timestamp (`SO_TIMESTAMPNS`: when the last bytes read arrived at the
//! socket), so a response is timed when it arrived, not when the thread got
//! round to reading it.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// An epoll set (level-triggered registrations).
pub struct Epoll {
    fd: OwnedFd,
}

/// What a socket in the set is ready for.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    /// The key it was registered with.
    pub key: u64,
    /// Readable, closed by the peer, or in error: read it.
    pub read: bool,
    /// Writable: finish a write.
    pub write: bool,
}

impl Epoll {
    /// A new, empty set.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory-safety preconditions; the result is checked.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, key: u64, write: bool) -> io::Result<()> {
        let mut events = libc::EPOLLIN | libc::EPOLLRDHUP;
        if write {
            events |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: key,
        };
        // SAFETY: valid descriptors and a fully initialised event.
        if unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Adds `fd` (readable) under `key`.
    pub fn add(&self, fd: RawFd, key: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, key, false)
    }

    /// Watches `fd` for writability too (`write`), or no longer.
    pub fn watch_write(&self, fd: RawFd, key: u64, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, key, write)
    }

    /// Removes `fd`.
    pub fn remove(&self, fd: RawFd) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: valid descriptors; a removal that fails (not registered) changes nothing.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
    }

    /// The sockets ready now, without waiting, into `out` (cleared first; at
    /// most its capacity). Returns whether the capacity was filled (then more
    /// may be ready).
    pub fn ready(
        &self,
        buf: &mut Vec<libc::epoll_event>,
        out: &mut Vec<Event>,
    ) -> io::Result<bool> {
        out.clear();
        let capacity = buf.capacity().max(1);
        buf.clear();
        // SAFETY: the kernel writes at most `capacity` events into the
        // vector's spare capacity; its length is set to what it wrote.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr(),
                capacity.min(i32::MAX as usize) as libc::c_int,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(true)
            } else {
                Err(err)
            };
        }
        // SAFETY: the kernel initialised the first `n` events.
        unsafe { buf.set_len(n as usize) };
        let read_mask = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
        out.extend(buf.iter().map(|e| Event {
            key: e.u64,
            read: e.events & read_mask != 0,
            write: e.events & libc::EPOLLOUT as u32 != 0,
        }));
        Ok(n as usize == capacity)
    }
}

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Asks the kernel to timestamp what arrives on `fd` (best effort: without
/// it, responses are timed when read). The first socket on the machine to
/// ask turns stamping on a moment later (the kernel does it from a work
/// queue), so the very first responses of a run may be timed when read.
pub fn enable_rx_timestamps(fd: RawFd) {
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor and a c_int option of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Reads into `buf`: the bytes read (0 at the end of the stream) and, when
/// the kernel gave one, when the last of them arrived (wall clock).
pub fn recv_timestamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
    // Room for one SCM_TIMESTAMPNS (a timespec) with its header, aligned.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid (no name, no iovecs, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (into `buf`) and `control`, all alive
    // and large enough for the lengths given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut arrived = None;
    // SAFETY: the kernel filled `msg`'s control area; the CMSG macros walk
    // it within `msg_controllen`, and the timespec is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                arrived = u64::try_from(ts.tv_sec).ok().map(|secs| {
                    UNIX_EPOCH + Duration::new(secs, u32::try_from(ts.tv_nsec).unwrap_or(0))
                });
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, arrived))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// What arrives is timestamped when it arrived, not when it was read.
    #[test]
    fn receive_timestamps_say_when_bytes_arrived() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        enable_rx_timestamps(client.as_raw_fd());
        // The first socket to ask turns the kernel's receive timestamps on
        // from a work queue, a moment later: until then nothing is stamped.
        std::thread::sleep(Duration::from_millis(20));
        let epoll = Epoll::new().expect("epoll");
        epoll.add(client.as_raw_fd(), 7).expect("add");
        let mut raw = Vec::with_capacity(4);
        let mut events = Vec::new();
        epoll.ready(&mut raw, &mut events).expect("ready");
        assert!(events.is_empty(), "nothing sent yet");

        server.write_all(b"hello").expect("write");
        let written = SystemTime::now();
        std::thread::sleep(Duration::from_millis(50));
        epoll.ready(&mut raw, &mut events).expect("ready");
        assert_eq!(events.len(), 1);
        assert!(events[0].read && events[0].key == 7);
        let mut buf = [0u8; 64];
        let (n, arrived) = recv_timestamped(client.as_raw_fd(), &mut buf).expect("recv");
        let read_at = SystemTime::now();
        assert_eq!(&buf[..n], b"hello");
        let arrived = arrived.expect("a receive timestamp");
        // It arrived right after the write, 50 ms before it was read.
        let after_write = arrived.duration_since(written).unwrap_or_default();
        assert!(
            after_write < Duration::from_millis(20),
            "{after_write:?} after the write"
        );
        assert!(read_at.duration_since(arrived).unwrap_or_default() >= Duration::from_millis(45));

        // Level-triggered: read dry, it is no longer ready; closed, it is again.
        epoll.ready(&mut raw, &mut events).expect("ready");
        assert!(events.is_empty());
        drop(server);
        std::thread::sleep(Duration::from_millis(20));
        epoll.ready(&mut raw, &mut events).expect("ready");
        assert!(events.len() == 1 && events[0].read);
        let (n, _) = recv_timestamped(client.as_raw_fd(), &mut buf).expect("recv");
        assert_eq!(n, 0, "end of stream");
    }
}
