//! Scripted fake SMTP servers on 127.0.0.1 for the client tests, and
//! certificates made with the `openssl` command.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use tern_client::{Client, Error};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

pub enum Inner {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Inner {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Inner::Plain(s) => s.read(b),
            Inner::Tls(s) => s.read(b),
        }
    }
}

impl Write for Inner {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Inner::Plain(s) => s.write(b),
            Inner::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
    }
}

/// The server's side of one connection.
pub struct Peer {
    r: Option<BufReader<Inner>>,
}

impl Peer {
    fn io(&mut self) -> &mut BufReader<Inner> {
        self.r.as_mut().expect("peer stream")
    }

    /// Sends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        let w = self.io().get_mut();
        w.write_all(bytes).expect("server write");
        w.flush().expect("server flush");
    }

    /// Sends reply lines, each with CRLF.
    pub fn send(&mut self, lines: &str) {
        let mut out = String::new();
        for l in lines.split('\n') {
            out.push_str(l);
            out.push_str("\r\n");
        }
        self.raw(out.as_bytes());
    }

    /// Reads one line (CRLF required) and returns it without CRLF;
    /// `None` at end of file.
    pub fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = self.io().read_until(b'\n', &mut buf).expect("server read");
        if n == 0 {
            return None;
        }
        assert!(buf.ends_with(b"\r\n"), "line without CRLF: {buf:?}");
        buf.truncate(buf.len() - 2);
        Some(String::from_utf8(buf).expect("UTF-8 command"))
    }

    /// Reads a line and checks it starts with `prefix`.
    pub fn expect(&mut self, prefix: &str) -> String {
        let l = self
            .line()
            .unwrap_or_else(|| panic!("EOF, expected {prefix}"));
        assert!(l.starts_with(prefix), "expected {prefix:?}, got {l:?}");
        l
    }

    /// Reads a command starting with `prefix` and sends `reply`; returns
    /// the command.
    pub fn reply(&mut self, prefix: &str, reply: &str) -> String {
        let l = self.expect(prefix);
        self.send(reply);
        l
    }

    /// Reads one command for each of `prefixes`, in order, before any reply
    /// (pipelining); returns them.
    pub fn expect_all(&mut self, prefixes: &[&str]) -> Vec<String> {
        prefixes.iter().map(|p| self.expect(p)).collect()
    }

    /// As [`Peer::expect_all`], then sends `replies` at once.
    pub fn pipelined(&mut self, prefixes: &[&str], replies: &str) -> Vec<String> {
        let lines = self.expect_all(prefixes);
        self.send(replies);
        lines
    }

    /// One pipelined transaction that the server accepts: reads MAIL, RCPT
    /// and DATA, answers 250, 250 and 354, reads the message and answers
    /// 250.
    pub fn accept_transaction(&mut self) -> Accepted {
        let lines = self.pipelined(&["MAIL", "RCPT", "DATA"], "250 ok\n250 ok\n354 go");
        Accepted {
            mail: lines[0].clone(),
            rcpt: lines[1].clone(),
            data: self.data_and_reply("250 ok"),
        }
    }

    /// Expects STARTTLS, says 220 and does the server side of the
    /// handshake with `config`.
    pub fn accept_starttls(&mut self, config: Arc<ServerConfig>) -> Result<(), rustls::Error> {
        self.expect("STARTTLS");
        self.send("220 go ahead");
        self.starttls(config)
    }

    /// Reads the message (as [`Peer::data`]) and answers it with `reply`;
    /// returns the wire bytes.
    pub fn data_and_reply(&mut self, reply: &str) -> Vec<u8> {
        let wire = self.data();
        self.send(reply);
        wire
    }

    /// Reads the message after 354 up to and including CRLF.CRLF; returns
    /// the wire bytes.
    pub fn data(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        loop {
            let n = self.io().read_until(b'\n', &mut wire).expect("read data");
            assert!(n > 0, "EOF inside data");
            if wire == b".\r\n" || wire.ends_with(b"\r\n.\r\n") {
                return wire;
            }
        }
    }

    /// Reads `n` bytes of data exactly.
    pub fn data_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.io().read_exact(&mut v).expect("read data bytes");
        v
    }

    /// Reads `chunk` bytes every `pause` until the client goes away.
    pub fn read_slowly(&mut self, chunk: usize, pause: Duration) {
        let mut buf = vec![0u8; chunk];
        loop {
            std::thread::sleep(pause);
            match self.io().read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// True when the client sent nothing more within 200 ms.
    pub fn quiet(&mut self) -> bool {
        if !self.io().buffer().is_empty() {
            return false;
        }
        let Inner::Plain(s) = self.io().get_mut() else {
            panic!("quiet() on TLS");
        };
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 1];
        let r = s.peek(&mut b);
        s.set_read_timeout(Some(WAIT)).unwrap();
        match r {
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            Ok(_) => false,
        }
    }

    /// Expects the client's QUIT (or end of file).
    pub fn quit(&mut self) {
        if let Some(l) = self.line() {
            assert_eq!(l, "QUIT");
            let _ = self.io().get_mut().write_all(b"221 bye\r\n");
        }
    }

    /// Reads until the client closes.
    pub fn until_eof(&mut self) {
        let mut sink = Vec::new();
        let _ = self.io().read_to_end(&mut sink);
    }

    /// Does the server side of a TLS handshake on this connection.
    pub fn starttls(&mut self, config: Arc<ServerConfig>) -> Result<(), rustls::Error> {
        let r = self.r.take().expect("peer stream");
        assert!(
            r.buffer().is_empty(),
            "client sent data before the handshake"
        );
        let Inner::Plain(mut sock) = r.into_inner() else {
            panic!("already TLS");
        };
        let mut conn = ServerConnection::new(config)?;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                return Err(e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .cloned()
                    .unwrap_or(rustls::Error::General(e.to_string())));
            }
        }
        self.r = Some(BufReader::new(Inner::Tls(Box::new(StreamOwned::new(
            conn, sock,
        )))));
        Ok(())
    }

    /// Closes the connection now.
    pub fn close(&mut self) {
        if let Some(r) = self.r.take()
            && let Inner::Plain(s) = r.get_ref()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// What [`Peer::accept_transaction`] read.
pub struct Accepted {
    /// The MAIL FROM command.
    pub mail: String,
    /// The RCPT TO command.
    pub rcpt: String,
    /// The message as it came over the wire, up to and including CRLF.CRLF.
    pub data: Vec<u8>,
}

/// Starts a server on 127.0.0.1 that accepts `conns` connections in turn
/// and runs `script` on each (with its number). Returns its address and
/// the thread, whose join re-raises a failed assertion of the script.
pub fn server<F>(conns: usize, script: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(usize, &mut Peer) + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        for i in 0..conns {
            let (s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(WAIT)).unwrap();
            s.set_write_timeout(Some(WAIT)).unwrap();
            let mut p = Peer {
                r: Some(BufReader::new(Inner::Plain(s))),
            };
            script(i, &mut p);
        }
    });
    (addr, h)
}

/// A TCP connection to `addr` with the test timeouts.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// Connects and reads the greeting (the peer is called
/// `mx.test [127.0.0.1]`).
pub fn connect(addr: SocketAddr) -> Result<Client<TcpStream>, Error> {
    Client::connect(tcp(addr), "mx.test [127.0.0.1]", Some(WAIT))
}

/// Connects, reads the greeting and says EHLO.
pub fn client(addr: SocketAddr) -> Client<TcpStream> {
    let mut c = connect(addr).expect("greeting");
    c.hello("client.test").expect("EHLO");
    c
}

/// The usual greeting and EHLO reply with `caps` as extension lines.
pub fn greet(p: &mut Peer, caps: &[&str]) {
    p.send("220 mx.test ESMTP");
    p.expect("EHLO client.test");
    let mut lines = vec!["250-mx.test".to_string()];
    for c in caps {
        lines.push(format!("250-{c}"));
    }
    let last = lines.pop().unwrap().replacen("250-", "250 ", 1);
    lines.push(last);
    p.send(&lines.join("\n"));
}

/// Certificates for the TLS tests, made with `openssl`.
pub struct Certs {
    pub dir: PathBuf,
    /// A CA certificate (PEM), self-signed.
    pub ca: Vec<u8>,
    /// Its key.
    pub ca_key: Vec<u8>,
    /// Another CA that signed nothing here.
    pub other_ca: Vec<u8>,
    /// The server chain (leaf for `mx.test.example`, signed by `ca`) and key.
    pub chain: Vec<u8>,
    pub key: Vec<u8>,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA and a leaf certificate for `mx.test.example`; `None` (the
/// test says SKIP) when there is no `openssl` command.
pub fn certs(tag: &str) -> Option<Certs> {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("SKIP: no openssl command to make test certificates");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("tern-client-certs-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for name in ["ca", "other"] {
        let mut a = vec!["req", "-x509"];
        a.extend_from_slice(&ec);
        let key = format!("{name}.key");
        let crt = format!("{name}.crt");
        a.extend_from_slice(&[
            "-days",
            "2",
            "-subj",
            "/CN=Tern Test CA",
            "-keyout",
            &key,
            "-out",
            &crt,
        ]);
        openssl(&a, &dir);
    }
    let mut a = vec!["req"];
    a.extend_from_slice(&ec);
    a.extend_from_slice(&[
        "-subj",
        "/CN=mx.test.example",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
    ]);
    openssl(&a, &dir);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:mx.test.example\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.crt",
        ],
        &dir,
    );
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
    Some(Certs {
        ca: read("ca.crt"),
        ca_key: read("ca.key"),
        other_ca: read("other.crt"),
        chain: read("leaf.crt"),
        key: read("leaf.key"),
        dir,
    })
}

impl Certs {
    /// The server configuration with the leaf certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        config_for(&self.chain, &self.key)
    }

    /// A server presenting the self-signed CA certificate itself.
    pub fn self_signed_config(&self) -> Arc<ServerConfig> {
        config_for(&self.ca, &self.ca_key)
    }
}

fn config_for(chain: &[u8], key: &[u8]) -> Arc<ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
