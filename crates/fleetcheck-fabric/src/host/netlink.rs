//! A small synchronous rtnetlink client. A socket talks to the network namespace of the thread
//! that opened it, so the backend opens one socket per namespace right after creating it.
//! Requests are batched: several messages go out in one `send`, then every ack is collected.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::RawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The most requests sent in one datagram. Each ack echoes its request and the kernel queues
/// them all on the socket before the first is read: 260 veth requests at once overran the
/// default receive buffer (208 KiB, ENOBUFS). 64 acks take well under a quarter of it.
pub const BATCH: usize = 64;

/// One rtnetlink socket, bound to the namespace it was opened in.
#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

/// A request of a batch.
pub enum Req {
    /// Create a bridge.
    NewBridge { name: String },
    /// Create a veth pair: `name` here, attached to bridge `master`; `peer` in namespace
    /// `peer_ns` with hardware address `peer_mac`.
    NewVeth {
        name: String,
        master: u32,
        peer: String,
        peer_ns: RawFd,
        peer_mac: [u8; 6],
    },
    /// Set link `name` up or down.
    SetUp { name: String, up: bool },
    /// Attach link `name` to bridge `master` and set it up.
    Enslave { name: String, master: u32 },
    /// Add an IPv4 address to link `index`.
    AddAddr {
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    },
}

impl Req {
    fn describe(&self) -> String {
        match self {
            Req::NewBridge { name } => format!("create bridge {name}"),
            Req::NewVeth { name, peer, .. } => format!("create veth pair {name}/{peer}"),
            Req::SetUp { name, up } => {
                format!("set link {name} {}", if *up { "up" } else { "down" })
            }
            Req::AddAddr { addr, prefix, .. } => format!("add address {addr}/{prefix}"),
            Req::Enslave { name, .. } => format!("attach {name} to the bridge"),
        }
    }

    fn message(self) -> (RouteNetlinkMessage, u16) {
        let create = NLM_F_CREATE | NLM_F_EXCL;
        match self {
            Req::NewBridge { name } => {
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(name));
                msg.attributes
                    .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                        InfoKind::Bridge,
                    )]));
                (RouteNetlinkMessage::NewLink(msg), create)
            }
            Req::NewVeth {
                name,
                master,
                peer,
                peer_ns,
                peer_mac,
            } => {
                let mut peer_msg = LinkMessage::default();
                peer_msg.attributes.push(LinkAttribute::IfName(peer));
                peer_msg
                    .attributes
                    .push(LinkAttribute::Address(peer_mac.to_vec()));
                peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_ns));
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(name));
                msg.attributes.push(LinkAttribute::Controller(master));
                msg.attributes.push(LinkAttribute::LinkInfo(vec![
                    LinkInfo::Kind(InfoKind::Veth),
                    LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
                ]));
                (RouteNetlinkMessage::NewLink(msg), create)
            }
            Req::SetUp { name, up } => {
                let mut msg = LinkMessage::default();
                msg.header.change_mask = LinkFlags::Up;
                if up {
                    msg.header.flags = LinkFlags::Up;
                }
                msg.attributes.push(LinkAttribute::IfName(name));
                (RouteNetlinkMessage::SetLink(msg), 0)
            }
            Req::Enslave { name, master } => {
                let mut msg = LinkMessage::default();
                msg.header.change_mask = LinkFlags::Up;
                msg.header.flags = LinkFlags::Up;
                msg.attributes.push(LinkAttribute::IfName(name));
                msg.attributes.push(LinkAttribute::Controller(master));
                (RouteNetlinkMessage::SetLink(msg), 0)
            }
            Req::AddAddr {
                index,
                addr,
                prefix,
            } => {
                let mut msg = AddressMessage::default();
                msg.header.family = AddressFamily::Inet;
                msg.header.prefix_len = prefix;
                msg.header.index = index;
                msg.attributes
                    .push(AddressAttribute::Local(IpAddr::V4(addr)));
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V4(addr)));
                (RouteNetlinkMessage::NewAddress(msg), create)
            }
        }
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code.abs())
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { socket, seq: 0 })
    }

    fn push(&mut self, buf: &mut Vec<u8>, msg: RouteNetlinkMessage, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let start = buf.len();
        buf.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut buf[start..]);
        self.seq
    }

    /// Sends the requests in datagrams of at most [`BATCH`] and waits for every ack of one
    /// before sending the next. The first failure is returned with a description of its
    /// request; requests after a failed one in the same datagram still ran, later datagrams
    /// are not sent.
    pub fn batch(&mut self, reqs: Vec<Req>) -> Result<(), (String, io::Error)> {
        let mut reqs = reqs.into_iter().peekable();
        while reqs.peek().is_some() {
            let chunk: Vec<Req> = reqs.by_ref().take(BATCH).collect();
            self.send_batch(chunk)?;
        }
        Ok(())
    }

    fn send_batch(&mut self, reqs: Vec<Req>) -> Result<(), (String, io::Error)> {
        let mut buf = Vec::new();
        let mut pending = Vec::new();
        for req in reqs {
            let what = req.describe();
            let (msg, flags) = req.message();
            let seq = self.push(&mut buf, msg, flags);
            pending.push((seq, what, None::<io::Error>));
        }
        self.socket
            .send(&buf, 0)
            .map_err(|e| ("send netlink batch".to_string(), e))?;
        let mut open = pending.len();
        let mut rbuf = vec![0u8; 64 * 1024];
        while open > 0 {
            let n = self
                .socket
                .recv(&mut &mut rbuf[..], 0)
                .map_err(|e| ("receive netlink ack".to_string(), e))?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[off..n])
                    .map_err(|e| ("decode netlink ack".to_string(), io::Error::other(e)))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
                if let NetlinkPayload::Error(err) = msg.payload {
                    if let Some(p) = pending
                        .iter_mut()
                        .find(|p| p.0 == msg.header.sequence_number)
                    {
                        p.2 = err.code.map(|c| errno(c.get()));
                        open -= 1;
                    }
                }
            }
        }
        match pending
            .into_iter()
            .find_map(|(_, what, e)| e.map(|e| (what, e)))
        {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// The index of link `name`.
    pub fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(
            header,
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::GetLink(msg)),
        );
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut rbuf = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rbuf[..], 0)?;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rbuf[..n])
                .map_err(io::Error::other)?;
            if msg.header.sequence_number != self.seq {
                continue;
            }
            return match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    Ok(link.header.index)
                }
                NetlinkPayload::Error(e) => Err(e
                    .code
                    .map_or_else(|| io::Error::other("no link"), |c| errno(c.get()))),
                _ => Err(io::Error::other("unexpected netlink answer")),
            };
        }
    }
}
