//! The out-of-band channel of `xrdma perf`: a TCP connection, as perftest uses, carrying
//! one line per message of `key=value` words.
//!
//! ```text
//! client -> server   HELLO test=raw-bw size=64 roce=198.18.0.2:4791
//! server -> client   OK roce=198.18.0.1:4791          (or: ERR <reason>)
//! client -> server   END sent=123456
//! server -> client   RESULT received=123000 elapsed_ns=1000000000 dropped=10
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// One message: a verb and its `key=value` words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// First word.
    pub verb: String,
    words: Vec<(String, String)>,
}

impl Message {
    /// A message with no words yet.
    pub fn new(verb: &str) -> Self {
        Message {
            verb: verb.to_string(),
            words: Vec::new(),
        }
    }

    /// Adds `key=value`.
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.words.push((key.to_string(), value.to_string()));
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> io::Result<&str> {
        self.words
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| bad(format!("{} message lacks {key}=", self.verb)))
    }

    /// The value of `key`, parsed.
    pub fn parse<T: std::str::FromStr>(&self, key: &str) -> io::Result<T> {
        let v = self.get(key)?;
        v.parse().map_err(|_| bad(format!("bad value {key}={v}")))
    }

    /// Text after the verb, for ERR messages.
    pub fn rest(&self) -> String {
        self.words
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn encode(&self) -> String {
        let mut line = self.verb.clone();
        for (k, v) in &self.words {
            line.push(' ');
            line.push_str(k);
            if !v.is_empty() {
                line.push('=');
                line.push_str(v);
            }
        }
        line.push('\n');
        line
    }

    fn decode(line: &str) -> io::Result<Self> {
        let mut it = line.split_whitespace();
        let verb = it
            .next()
            .ok_or_else(|| bad("empty control message".into()))?
            .to_string();
        let words = it
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (w.to_string(), String::new()),
            })
            .collect();
        Ok(Message { verb, words })
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A connected control channel.
pub struct Control {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
    /// A line being read, kept across non-blocking attempts that found only part of it.
    partial: String,
}

impl Control {
    /// Connects to a server's control port, retrying for up to `timeout` while it starts.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(s) => return Self::from_stream(s),
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("connecting to the perf server at {addr}: {e}"),
                    ));
                }
            }
        }
    }

    /// Waits for one client on `listener`.
    pub fn accept(listener: &TcpListener) -> io::Result<Self> {
        let (s, _) = listener.accept()?;
        Self::from_stream(s)
    }

    fn from_stream(stream: TcpStream) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(Control {
            reader: BufReader::new(stream.try_clone()?),
            stream,
            partial: String::new(),
        })
    }

    /// Our end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Message) -> io::Result<()> {
        self.stream.write_all(m.encode().as_bytes())
    }

    /// Waits for one message; an `ERR` message becomes an error.
    pub fn recv(&mut self) -> io::Result<Message> {
        self.stream.set_nonblocking(false)?;
        self.read_line()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the control connection",
            )
        })
    }

    /// Returns a message if a whole one has arrived, without waiting.
    pub fn try_recv(&mut self) -> io::Result<Option<Message>> {
        self.stream.set_nonblocking(true)?;
        let result = match self.read_line() {
            Ok(Some(m)) => Ok(Some(m)),
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "peer closed the control connection",
            )),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        };
        self.stream.set_nonblocking(false)?;
        result
    }

    fn read_line(&mut self) -> io::Result<Option<Message>> {
        // On WouldBlock, what was read so far stays in `partial` for the next attempt.
        if self.reader.read_line(&mut self.partial)? == 0 && self.partial.is_empty() {
            return Ok(None);
        }
        if !self.partial.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "partial control message",
            ));
        }
        let line = std::mem::take(&mut self.partial);
        let m = Message::decode(&line)?;
        if m.verb == "ERR" {
            return Err(io::Error::other(format!("peer: {}", m.rest())));
        }
        Ok(Some(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_errors_surface() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut c = Control::accept(&listener).unwrap();
            let hello = c.recv().unwrap();
            assert_eq!(hello.verb, "HELLO");
            assert_eq!(hello.parse::<usize>("size").unwrap(), 64);
            assert!(hello.get("missing").is_err());
            c.send(&Message::new("ERR").with("no", "").with("such", "test"))
                .unwrap();
        });
        let mut c = Control::connect(addr, Duration::from_secs(5)).unwrap();
        c.send(
            &Message::new("HELLO")
                .with("test", "raw-bw")
                .with("size", 64),
        )
        .unwrap();
        let err = c.recv().unwrap_err();
        assert!(err.to_string().contains("no such=test"), "{err}");
        server.join().unwrap();
    }
}
