//! UDP sockets over loopback, IPv4 and IPv6.

mod util;

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;

use packet::datagram::{Datagram, DatagramHandler};
use util::{spawn_reactor, IO_TIMEOUT};

/// Echoes every datagram; reports oversized ones and its unbind.
struct Echo(mpsc::Sender<String>);

impl DatagramHandler for Echo {
    fn post_init(&mut self, _sock: &mut Datagram<'_>) {
        let _ = self.0.send("post_init".into());
    }
    fn receive_datagram(&mut self, sock: &mut Datagram<'_>, data: &[u8], from: SocketAddr) {
        if data == b"close" {
            sock.close();
            return;
        }
        sock.send_datagram(data, from).unwrap();
    }
    fn datagram_too_large(&mut self, _sock: &mut Datagram<'_>, from: SocketAddr, len: usize) {
        let _ = self.0.send(format!("too large: {len} from {}", from.ip()));
    }
    fn unbind(&mut self, _sock: &mut Datagram<'_>) {
        let _ = self.0.send("unbind".into());
    }
}

fn echo_round_trips(bind: &'static str, client_bind: &str) {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.datagrams().open_datagram_socket(bind, Echo(tx))?;
        r.datagrams().local_addr(id)
    });
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "post_init");
    let client = UdpSocket::bind(client_bind).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for size in [
        0usize,
        1,
        1000,
        8000,
        65_507.min(if bind.starts_with('[') {
            65_487
        } else {
            65_507
        }),
    ] {
        let data = util::pattern(size as u64, size);
        client.send_to(&data, server.value).unwrap();
        let mut buf = vec![0u8; 70_000];
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, server.value);
        assert!(
            buf[..n] == data[..],
            "datagram of {size} bytes came back changed"
        );
    }
    client.send_to(b"close", server.value).unwrap();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "unbind");
    server.stop();
}

#[test]
fn ipv4_datagrams_of_every_size_echo_whole() {
    echo_round_trips("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn ipv6_datagrams_echo_whole() {
    echo_round_trips("[::1]:0", "[::1]:0");
}

#[test]
fn a_datagram_larger_than_the_buffer_is_reported_not_truncated() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r
            .datagrams()
            .open_datagram_socket_with("127.0.0.1:0", 64, Echo(tx))?;
        r.datagrams().local_addr(id)
    });
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "post_init");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.send_to(&[1u8; 100], server.value).unwrap();
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        "too large: 100 from 127.0.0.1"
    );
    // A datagram that fits still comes back.
    client.send_to(b"fits", server.value).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"fits");
    server.stop();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "unbind");
}
