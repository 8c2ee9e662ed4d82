//! A blocking RTMP client for the benchmark harnesses (rml_rtmp's client
//! session over a std socket): connect, publish or play.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};

pub struct Rtmp {
    pub socket: TcpStream,
    pub session: ClientSession,
    pub events: Vec<ClientSessionEvent>,
}

impl Rtmp {
    pub fn connect(port: u16, app: &str) -> Rtmp {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
        socket.set_nodelay(true).unwrap();
        let mut hs = Handshake::new(PeerType::Client);
        socket
            .write_all(&hs.generate_outbound_p0_and_p1().unwrap())
            .unwrap();
        let mut buf = [0u8; 8192];
        let leftover = loop {
            let n = socket.read(&mut buf).unwrap();
            match hs.process_bytes(&buf[..n]).unwrap() {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    socket.write_all(&response_bytes).unwrap()
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    socket.write_all(&response_bytes).unwrap();
                    break remaining_bytes;
                }
            }
        };
        let mut cfg = ClientSessionConfig::new();
        cfg.tc_url = Some(format!("rtmp://127.0.0.1:{port}/{app}"));
        let (session, initial) = ClientSession::new(cfg).unwrap();
        let mut c = Rtmp {
            socket,
            session,
            events: Vec::new(),
        };
        c.apply(initial);
        let r = c.session.request_connection(app.to_owned()).unwrap();
        c.apply(vec![r]);
        if !leftover.is_empty() {
            let r = c.session.handle_input(&leftover).unwrap();
            c.apply(r);
        }
        c.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted));
        c
    }

    pub fn apply(&mut self, results: Vec<ClientSessionResult>) {
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => {
                    self.socket.write_all(&p.bytes).unwrap()
                }
                ClientSessionResult::RaisedEvent(e) => self.events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    pub fn pump(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match self.socket.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                let r = self.session.handle_input(&buf[..n]).unwrap();
                self.apply(r);
                true
            }
            Err(_) => true,
        }
    }

    pub fn wait_for(&mut self, f: impl Fn(&ClientSessionEvent) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        self.socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        loop {
            if let Some(i) = self.events.iter().position(&f) {
                self.events.drain(..=i);
                return;
            }
            assert!(Instant::now() < deadline, "RTMP peer did not answer");
            assert!(self.pump(), "RTMP peer closed");
        }
    }
}

impl Rtmp {
    /// Connects to `app` and plays `stream`, waiting for the server's yes.
    pub fn player(port: u16, app: &str, stream: &str) -> Rtmp {
        let mut p = Rtmp::connect(port, app);
        let r = p.session.request_playback(stream.to_owned()).unwrap();
        p.apply(vec![r]);
        p.wait_for(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted));
        p
    }

    /// Connects to `app` and publishes `key`, waiting for the server's yes.
    pub fn publisher(port: u16, app: &str, key: &str) -> Rtmp {
        let mut p = Rtmp::connect(port, app);
        let r = p
            .session
            .request_publishing(key.to_owned(), PublishRequestType::Live)
            .unwrap();
        p.apply(vec![r]);
        p.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted));
        p
    }
}
