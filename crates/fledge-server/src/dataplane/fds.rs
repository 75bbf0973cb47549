//! Listening sockets passed between processes over a Unix socket (`SCM_RIGHTS`):
//! how a new data-plane process gets the old one's ports without closing them.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The most sockets one handover carries (one per app).
pub const MAX_SOCKETS: usize = 250;

/// Sends `fds` in one message (with one byte of data, as a message must have).
pub fn send(stream: &UnixStream, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_SOCKETS {
        return Err(io::Error::other(format!(
            "{} sockets is more than the {MAX_SOCKETS} a handover carries",
            fds.len()
        )));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("the sockets do not fit one message"));
    }
    rustix::net::sendmsg(
        stream.as_fd(),
        &[IoSlice::new(b"S")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Receives the message [`send`] sent with `count` sockets.
pub fn receive(stream: &UnixStream, count: usize) -> io::Result<Vec<OwnedFd>> {
    if count > MAX_SOCKETS {
        return Err(io::Error::other(format!(
            "{count} sockets is more than the {MAX_SOCKETS} a handover carries"
        )));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(count))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        stream.as_fd(),
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes != 1 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the old data plane hung up before sending its sockets",
        ));
    }
    let mut fds = Vec::with_capacity(count);
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if fds.len() != count {
        return Err(io::Error::other(format!(
            "expected {count} sockets, received {}",
            fds.len()
        )));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_cross_to_the_other_end_and_still_listen() {
        let (a, b) = UnixStream::pair().unwrap();
        let one = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let two = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [one.local_addr().unwrap(), two.local_addr().unwrap()];
        send(&a, &[one.as_fd(), two.as_fd()]).unwrap();
        drop((one, two));
        let got = receive(&b, 2).unwrap();
        for (fd, addr) in got.into_iter().zip(addrs) {
            let listener = std::net::TcpListener::from(fd);
            assert_eq!(listener.local_addr().unwrap(), addr);
            let _client = std::net::TcpStream::connect(addr).unwrap();
            listener.accept().unwrap();
        }
        assert!(send(&a, &vec![a.as_fd(); MAX_SOCKETS + 1]).is_err());
    }
}
