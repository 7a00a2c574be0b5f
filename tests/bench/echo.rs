//! The transport's reference for a small command: a trivial server thread in the
//! benchmark process, on the daemons' CPU, that answers every command at once with a
//! 10-byte success response, measured by the same client in the same rounds as the
//! daemons. Not a strict floor across CPUs: waking a thread of the client's own process
//! is not the same as waking another process, and a daemon has come in below it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;

use crate::daemon::Transport;
use crate::machine::Pinning;
use crate::wire::{DataAddress, DataConn};

/// TPM_ST_NO_SESSIONS, size 10, TPM_RC_SUCCESS.
const RESPONSE: [u8; 10] = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0];

pub struct Echo {
    pub conn: DataConn,
    server: Option<JoinHandle<()>>,
}

impl Echo {
    /// Starts the server (its thread on the daemon CPU) and connects to it.
    pub fn start(transport: Transport, dir: &Path, pinning: &Pinning) -> Echo {
        let (address, server) = match transport {
            Transport::Unix => {
                let path = dir.join("echo.sock");
                let listener = UnixListener::bind(&path).expect("bind the echo socket");
                let server = pinning.spawn_on_daemon_cpu(|| {
                    std::thread::spawn(move || {
                        if let Ok((stream, _)) = listener.accept() {
                            serve(stream);
                        }
                    })
                });
                (DataAddress::Unix(path), server)
            }
            Transport::Tcp => {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo port");
                let port = listener.local_addr().expect("echo port").port();
                let server = pinning.spawn_on_daemon_cpu(|| {
                    std::thread::spawn(move || {
                        if let Ok((stream, _)) = listener.accept() {
                            stream.set_nodelay(true).expect("TCP_NODELAY");
                            serve(stream);
                        }
                    })
                });
                (DataAddress::Tcp(port), server)
            }
        };
        Echo {
            conn: DataConn::connect(&address),
            server: Some(server),
        }
    }
}

impl Drop for Echo {
    /// Closing the client ends the server's loop.
    fn drop(&mut self) {
        self.conn.close();
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Reads whole commands (framed by their size field, as the daemons do) and answers each
/// with one write, until the client closes.
fn serve(mut stream: impl Read + Write) {
    let mut buf = [0u8; 4096];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        if filled < 10 {
            continue;
        }
        let size = u32::from_be_bytes([buf[2], buf[3], buf[4], buf[5]]) as usize;
        if filled >= size.clamp(10, buf.len()) {
            filled = 0;
            if stream.write_all(&RESPONSE).is_err() {
                return;
            }
        }
    }
}
