//! A TCP proxy the test controls, to cut a broker off silently: a network partition, a
//! forgotten NAT or conntrack entry, a failover behind the same address.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

/// Forwards `127.0.0.1:port` to an upstream port until [`SilentProxy::silence`]: from then on
/// every connection open at that moment **carries nothing and closes nothing**, for good, as
/// after a silent partition, where only the client can notice. While silent, new connections
/// are accepted and then carry nothing either. After [`SilentProxy::heal`] new connections go
/// through again; the old ones stay dead. A refused upstream (the broker down) closes the
/// client's connection, as a loud fault does.
///
/// Pump threads stop reading a dead connection, so its bytes stay in the socket buffers and
/// the sender's writes end up blocked, as with a peer that no longer acknowledges. On loopback
/// the kernel still acknowledges TCP segments and keepalive probes, so only application-level
/// liveness checks (heartbeats, pings, request timeouts) can find the dead connection here.
pub struct SilentProxy {
    /// The port clients connect to.
    pub port: u16,
    state: Arc<State>,
    accept: Option<JoinHandle<()>>,
}

struct State {
    upstream: SocketAddr,
    silent: AtomicBool,
    stop: AtomicBool,
    /// Every connection accepted, dead or alive, kept open until the proxy is dropped.
    connections: Mutex<Vec<Arc<Connection>>>,
}

struct Connection {
    dead: AtomicBool,
    client: TcpStream,
    upstream: Option<TcpStream>,
}

impl SilentProxy {
    /// A proxy on a free port in front of `127.0.0.1:upstream_port`.
    ///
    /// # Panics
    ///
    /// When no port can be bound.
    #[must_use]
    pub fn start(upstream_port: u16) -> Self {
        Self::start_on(crate::free_port(), upstream_port)
    }

    /// A proxy on `port` in front of `127.0.0.1:upstream_port` (for a broker that must
    /// advertise the proxy's address, such as a Kafka broker's advertised listener).
    ///
    /// # Panics
    ///
    /// When `port` cannot be bound.
    #[must_use]
    pub fn start_on(port: u16, upstream_port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the proxy's port");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let state = Arc::new(State {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            silent: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let accept = thread::spawn({
            let state = Arc::clone(&state);
            move || accept_loop(&listener, &state)
        });
        Self {
            port,
            state,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:port`.
    #[must_use]
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every open connection goes dead for good; new ones are accepted and carry nothing.
    pub fn silence(&self) {
        self.state.silent.store(true, Ordering::SeqCst);
        for connection in self.state.lock().iter() {
            connection.dead.store(true, Ordering::SeqCst);
        }
    }

    /// New connections go through again; the ones that went dead stay dead.
    pub fn heal(&self) {
        self.state.silent.store(false, Ordering::SeqCst);
    }

    /// Connections accepted so far, dead or alive.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.state.lock().len()
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Connection>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>) {
    while !state.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => continue,
        };
        let _ = client.set_nonblocking(false);
        if state.silent.load(Ordering::SeqCst) {
            state.lock().push(Arc::new(Connection {
                dead: AtomicBool::new(true),
                client,
                upstream: None,
            }));
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&state.upstream, Duration::from_secs(2))
        else {
            // The broker refuses: a loud fault, passed on as one.
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
        let connection = Arc::new(Connection {
            dead: AtomicBool::new(false),
            client,
            upstream: Some(upstream),
        });
        state.lock().push(Arc::clone(&connection));
        for to_upstream in [true, false] {
            let (connection, state) = (Arc::clone(&connection), Arc::clone(state));
            thread::spawn(move || pump(&connection, &state, to_upstream));
        }
    }
}

/// Copies one direction until the connection dies (then stops reading, closing nothing) or a
/// side closes (then closes both, as the peer did).
fn pump(connection: &Connection, state: &State, to_upstream: bool) {
    let Some(upstream) = &connection.upstream else {
        return;
    };
    let (from, to) = if to_upstream {
        (&connection.client, upstream)
    } else {
        (upstream, &connection.client)
    };
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if connection.dead.load(Ordering::SeqCst) || state.stop.load(Ordering::SeqCst) {
            return;
        }
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                // Bytes read as the connection died are lost, as in the network.
                if connection.dead.load(Ordering::SeqCst) {
                    return;
                }
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    if !connection.dead.load(Ordering::SeqCst) {
        let _ = connection.client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for connection in self.state.lock().drain(..) {
            let _ = connection.client.shutdown(Shutdown::Both);
            if let Some(upstream) = &connection.upstream {
                let _ = upstream.shutdown(Shutdown::Both);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free port.
    fn echo() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn round_trip(stream: &mut TcpStream) -> Option<Vec<u8>> {
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        stream.write_all(b"ping").ok()?;
        let mut buffer = [0u8; 4];
        stream.read_exact(&mut buffer).ok()?;
        Some(buffer.to_vec())
    }

    #[test]
    fn silence_kills_old_connections_for_good_and_heal_lets_new_ones_through() {
        let proxy = SilentProxy::start(echo());
        let mut old = TcpStream::connect(proxy.addr()).expect("connects");
        assert_eq!(round_trip(&mut old).as_deref(), Some(&b"ping"[..]));

        proxy.silence();
        assert_eq!(
            round_trip(&mut old),
            None,
            "the old connection carries nothing"
        );
        let mut during = TcpStream::connect(proxy.addr()).expect("accepted while silent");
        assert_eq!(
            round_trip(&mut during),
            None,
            "a new one carries nothing either"
        );

        proxy.heal();
        let mut fresh = TcpStream::connect(proxy.addr()).expect("connects");
        assert_eq!(round_trip(&mut fresh).as_deref(), Some(&b"ping"[..]));
        assert_eq!(round_trip(&mut old), None, "the old one stays dead");
        // Nothing was closed: a read on the dead connection times out instead of ending.
        let mut buffer = [0u8; 1];
        let error = old.read(&mut buffer).expect_err("no EOF, no data");
        assert!(matches!(
            error.kind(),
            ErrorKind::WouldBlock | ErrorKind::TimedOut
        ));
        assert_eq!(proxy.connections(), 3);
    }
}
