//! A minimal Redis client: RESP2 over one `TcpStream`, `redis://` URLs, pipelines.
//!
//! Production code would use the `redis` crate (`redis::Client::open(url)`,
//! `redis::cmd("HSET")`, `redis::pipe().atomic()`); this is the part of it the producer needs,
//! written against the standard library because no crate registry is reachable here.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One reply, as RESP2 sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    Nil,
}

impl Reply {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(bytes) => Some(bytes),
            Reply::Simple(text) => Some(text.as_bytes()),
            _ => None,
        }
    }

    /// Text of a bulk or simple string; bytes that are not UTF-8 are replaced (U+FFFD).
    pub fn to_text(&self) -> Option<String> {
        self.as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(items) => Some(items),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The socket failed or timed out.
    Io(io::Error),
    /// The server sent something that is not RESP2.
    Protocol(String),
    /// The server answered with an error reply (`-ERR ...`, `-WRONGTYPE ...`).
    Server(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(err) => write!(f, "redis connection: {}", err),
            Error::Protocol(what) => write!(f, "redis protocol: {}", what),
            Error::Server(message) => write!(f, "redis: {}", message),
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Error::Io(err)
    }
}

/// Where to connect: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    pub db: u32,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, String> {
        let rest = if let Some(rest) = url.strip_prefix("redis://") {
            rest
        } else if url.starts_with("rediss://") {
            return Err("rediss:// (TLS) is not supported by this example".into());
        } else {
            return Err(format!("not a redis:// URL: {:?}", url));
        };
        if rest.contains('?') || rest.contains('#') {
            return Err("query options in the URL are not supported".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.find(':') {
                    Some(at) => (&info[..at], Some(&info[at + 1..])),
                    None => (info, None),
                };
                let user = percent_decode(user)?;
                let pass = pass.map(percent_decode).transpose()?;
                // redis://:secret@host is a password alone; redis://secret@host too (as
                // redis-py reads it when there is no colon).
                match (user.is_empty(), pass) {
                    (true, pass) => (None, pass),
                    (false, None) => (None, Some(user)),
                    (false, Some(pass)) => (Some(user), Some(pass)),
                }
            }
        };
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            // [::1]:6379
            let close = bracketed.find(']').ok_or("unclosed [ in the host")?;
            let host = &bracketed[..close];
            let after = &bracketed[close + 1..];
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("unexpected {:?} after the host", after)),
            };
            (host.to_string(), port)
        } else {
            match hostport.rfind(':') {
                Some(at) => (hostport[..at].to_string(), Some(&hostport[at + 1..])),
                None => (hostport.to_string(), None),
            }
        };
        let host = if host.is_empty() {
            "127.0.0.1".to_string()
        } else {
            host
        };
        let port = match port {
            None => 6379,
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| format!("not a port: {:?}", text))?,
        };
        let db = match path {
            "" => 0,
            text => text
                .parse::<u32>()
                .map_err(|_| format!("not a database number: {:?}", text))?,
        };
        Ok(RedisUrl {
            host,
            port,
            db,
            username,
            password,
        })
    }
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .ok_or("a truncated %-escape in the URL")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a bad %-escape in the URL")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape in the URL that is not UTF-8".into())
}

/// One RESP command as it goes on the wire: an array of bulk strings (binary-safe).
pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// Limits on what we accept from the server, so a wrong port (an HTTP server, say) fails
// with a message rather than an allocation of whatever length it claims.
const MAX_BULK: usize = 512 * 1024 * 1024; // Redis's own proto-max-bulk-len default
const MAX_DEPTH: usize = 16;
const MAX_LINE: usize = 64 * 1024;

pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    /// Connects, authenticates (AUTH) and selects the database (SELECT), as a URL says.
    pub fn open(url: &RedisUrl, timeout: Duration) -> Result<Connection, Error> {
        let mut last = None;
        let mut stream = None;
        for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(err) => last = Some(err),
            }
        }
        let stream = match stream {
            Some(stream) => stream,
            None => {
                return Err(Error::Io(last.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, "the host has no address")
                })))
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let mut conn = Connection {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        match (&url.username, &url.password) {
            (Some(user), Some(pass)) => {
                conn.command(&["AUTH", user.as_str(), pass.as_str()])?;
            }
            (None, Some(pass)) => {
                conn.command(&["AUTH", pass.as_str()])?;
            }
            _ => {}
        }
        if url.db != 0 {
            conn.command(&["SELECT", url.db.to_string().as_str()])?;
        }
        Ok(conn)
    }

    /// How long a reply may take; blocking commands need more than their own timeout.
    pub fn set_read_timeout(&mut self, timeout: Duration) -> Result<(), Error> {
        self.writer.set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// Sends one command and reads its reply; an error reply becomes `Error::Server`.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, Error> {
        self.writer.write_all(&encode(args))?;
        match self.read_reply(0)? {
            Reply::Error(message) => Err(Error::Server(message)),
            reply => Ok(reply),
        }
    }

    /// Sends several commands in one write and reads one reply each, error replies
    /// included (MULTI ... EXEC reports a failed command inside EXEC's array).
    pub fn pipeline(&mut self, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, Error> {
        let mut wire = Vec::new();
        for command in commands {
            wire.extend_from_slice(&encode(command));
        }
        self.writer.write_all(&wire)?;
        commands.iter().map(|_| self.read_reply(0)).collect()
    }

    fn read_line(&mut self) -> Result<Vec<u8>, Error> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        if !line.ends_with(b"\r\n") {
            return Err(Error::Protocol("a reply line without CRLF".into()));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_reply(&mut self, depth: usize) -> Result<Reply, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::Protocol("replies nested too deep".into()));
        }
        let line = self.read_line()?;
        let (kind, body) = line
            .split_first()
            .ok_or_else(|| Error::Protocol("an empty line".into()))?;
        let text = || String::from_utf8_lossy(body).into_owned();
        let length = |body: &[u8]| -> Result<i64, Error> {
            std::str::from_utf8(body)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| {
                    Error::Protocol(format!("not a length: {:?}", String::from_utf8_lossy(body)))
                })
        };
        match kind {
            b'+' => Ok(Reply::Simple(text())),
            b'-' => Ok(Reply::Error(text())),
            b':' => Ok(Reply::Integer(length(body)?)),
            b'$' => {
                let len = length(body)?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                let len = len as usize;
                if len > MAX_BULK {
                    return Err(Error::Protocol(format!("a bulk string of {} bytes", len)));
                }
                let mut data = vec![0u8; len + 2];
                self.reader.read_exact(&mut data)?;
                if !data.ends_with(b"\r\n") {
                    return Err(Error::Protocol("a bulk string without CRLF".into()));
                }
                data.truncate(len);
                Ok(Reply::Bulk(data))
            }
            b'*' => {
                let len = length(body)?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                if len as usize > MAX_BULK {
                    return Err(Error::Protocol(format!("an array of {} items", len)));
                }
                let mut items = Vec::with_capacity((len as usize).min(1024));
                for _ in 0..len {
                    items.push(self.read_reply(depth + 1)?);
                }
                Ok(Reply::Array(items))
            }
            other => Err(Error::Protocol(format!(
                "unknown reply type {:?} (is this a Redis server?)",
                *other as char
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_db_and_password() {
        let url = RedisUrl::parse("redis://:s%40cret@cache.internal:6380/2").unwrap();
        assert_eq!(url.host, "cache.internal");
        assert_eq!((url.port, url.db), (6380, 2));
        assert_eq!(
            (url.username, url.password.as_deref()),
            (None, Some("s@cret"))
        );
        let url = RedisUrl::parse("redis://billing:pw@[::1]").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db), ("::1", 6379, 0));
        assert_eq!(url.username.as_deref(), Some("billing"));
        let url = RedisUrl::parse("redis://localhost").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.password),
            ("localhost", 6379, None)
        );
    }

    #[test]
    fn bad_urls_say_why() {
        assert!(RedisUrl::parse("http://x")
            .unwrap_err()
            .contains("redis://"));
        assert!(RedisUrl::parse("rediss://x").unwrap_err().contains("TLS"));
        assert!(RedisUrl::parse("redis://x:0").unwrap_err().contains("port"));
        assert!(RedisUrl::parse("redis://x:6379/a")
            .unwrap_err()
            .contains("database"));
        assert!(RedisUrl::parse("redis://x?db=1")
            .unwrap_err()
            .contains("query"));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["GET", "k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
        );
        assert_eq!(
            encode(&[b"a\r\n".to_vec()]),
            b"*1\r\n$3\r\na\r\n\r\n".to_vec()
        );
    }
}
