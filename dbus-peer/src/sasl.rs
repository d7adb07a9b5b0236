//! The server side of the D-Bus authentication exchange (SASL EXTERNAL),
//! done here rather than by zbus so that it is bounded in every way a
//! client could stretch it: lines of at most [`MAX_LINE`] bytes, at most
//! [`MAX_COMMANDS`] commands, read byte by byte so that nothing after
//! `BEGIN` (the client's first message) is consumed, and no panicking
//! paths. The caller puts a deadline around it.
//!
//! The peer's uid has already been checked with SO_PEERCRED when this runs;
//! EXTERNAL's claimed uid must still match it. File descriptor passing is
//! declined: the API never sends or takes one.
//!
//! ```text
//! C: \0AUTH EXTERNAL 30\r\n        (hex of the decimal uid, "0")
//! S: OK <guid>\r\n
//! C: NEGOTIATE_UNIX_FD\r\n         (optional)
//! S: ERROR fd passing is not used\r\n
//! C: BEGIN\r\n                     then D-Bus messages
//! ```

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest command line accepted, "\r\n" included.
pub const MAX_LINE: usize = 512;
/// Commands accepted before giving up on the client.
pub const MAX_COMMANDS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SaslError {
    #[error("authentication: {0}")]
    Io(#[from] io::Error),
    #[error("authentication: {0}")]
    Protocol(String),
}

fn protocol(msg: impl Into<String>) -> SaslError {
    SaslError::Protocol(msg.into())
}

/// What the server waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Auth,
    Data,
    Begin,
}

/// Reads one command line (without "\r\n").
async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, SaslError> {
    let mut line = Vec::with_capacity(64);
    loop {
        let b = match stream.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(protocol("the client hung up")),
            Err(e) => return Err(e.into()),
        };
        if b == b'\n' {
            if line.pop() != Some(b'\r') {
                return Err(protocol("a line does not end in \\r\\n"));
            }
            return String::from_utf8(line).map_err(|_| protocol("a line is not ASCII"));
        }
        if !(b == b'\r' || (0x20..0x7f).contains(&b)) {
            return Err(protocol("a line is not ASCII"));
        }
        line.push(b);
        if line.len() + 1 > MAX_LINE {
            return Err(protocol("a line is too long"));
        }
    }
}

async fn reply<S: AsyncWrite + Unpin>(stream: &mut S, line: &str) -> Result<(), SaslError> {
    let mut out = Vec::with_capacity(line.len() + 2);
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

/// Whether EXTERNAL's data (hex of the uid in decimal ASCII) names `uid`.
pub fn external_id_matches(hex: &str, uid: u32) -> bool {
    let pairs = hex.as_bytes().chunks_exact(2);
    if hex.is_empty() || hex.len() > 20 || !pairs.remainder().is_empty() {
        return false;
    }
    let mut text = String::with_capacity(hex.len() / 2);
    for pair in pairs {
        let digit = |b: u8| (b as char).to_digit(16);
        let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else { return false };
        let (Some(hi), Some(lo)) = (digit(hi), digit(lo)) else { return false };
        text.push(char::from((hi * 16 + lo) as u8));
    }
    text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u32>() == Ok(uid)
}

/// Runs the server side of the exchange on `stream` for a peer whose
/// SO_PEERCRED uid is `peer_uid`; `Ok` after the client's `BEGIN`.
pub async fn server_handshake<S>(stream: &mut S, guid: &str, peer_uid: u32) -> Result<(), SaslError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match stream.read_u8().await {
        Ok(0) => {}
        Ok(_) => return Err(protocol("the first byte is not NUL")),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(protocol("the client hung up")),
        Err(e) => return Err(e.into()),
    }
    let ok = format!("OK {guid}");
    let rejected = "REJECTED EXTERNAL";
    let mut step = Step::Auth;
    for _ in 0..MAX_COMMANDS {
        let line = read_line(stream).await?;
        let words: Vec<&str> = line.split(' ').collect();
        match (step, words.as_slice()) {
            (_, ["CANCEL", ..]) | (_, ["ERROR", ..]) => {
                reply(stream, rejected).await?;
                step = Step::Auth;
            }
            (Step::Auth, ["AUTH", "EXTERNAL"]) => {
                reply(stream, "DATA").await?;
                step = Step::Data;
            }
            (Step::Auth, ["AUTH", "EXTERNAL", id]) if external_id_matches(id, peer_uid) => {
                reply(stream, &ok).await?;
                step = Step::Begin;
            }
            (Step::Auth, ["AUTH", ..]) => reply(stream, rejected).await?,
            // Empty data: "whoever the socket says I am".
            (Step::Data, ["DATA"] | ["DATA", ""]) => {
                reply(stream, &ok).await?;
                step = Step::Begin;
            }
            (Step::Data, ["DATA", id]) if external_id_matches(id, peer_uid) => {
                reply(stream, &ok).await?;
                step = Step::Begin;
            }
            (Step::Data, ["DATA", ..]) => {
                reply(stream, rejected).await?;
                step = Step::Auth;
            }
            (Step::Begin, ["NEGOTIATE_UNIX_FD"]) => reply(stream, "ERROR fd passing is not used").await?,
            (Step::Begin, ["BEGIN"]) => return Ok(()),
            (_, ["BEGIN", ..]) => return Err(protocol("BEGIN before authentication")),
            _ => reply(stream, "ERROR unexpected command").await?,
        }
    }
    Err(protocol("too many commands"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    /// Runs the server against `input`; what it answered and how it ended.
    fn exchange(input: &[u8], uid: u32) -> (String, Result<(), String>) {
        rt().block_on(async {
            let (mut client, mut server) = tokio::io::duplex(64 * 1024);
            client.write_all(input).await.unwrap();
            client.shutdown().await.unwrap();
            let res = server_handshake(&mut server, "0123456789abcdef0123456789abcdef", uid).await;
            drop(server);
            let mut out = String::new();
            client.read_to_string(&mut out).await.unwrap();
            (out, res.map_err(|e| e.to_string()))
        })
    }

    #[test]
    fn external_with_the_peer_uid() {
        let (out, res) = exchange(b"\0AUTH EXTERNAL 30\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nl\x01\0\x01", 0);
        assert_eq!(res, Ok(()));
        assert_eq!(out, "OK 0123456789abcdef0123456789abcdef\r\nERROR fd passing is not used\r\n");
        let (out, res) = exchange(b"\0AUTH EXTERNAL\r\nDATA\r\nBEGIN\r\n", 1000);
        assert_eq!(res, Ok(()));
        assert!(out.starts_with("DATA\r\nOK "), "{out}");
    }

    #[test]
    fn another_uid_or_mechanism_is_rejected() {
        // "1000" claimed on a socket of uid 0.
        let (out, res) = exchange(b"\0AUTH EXTERNAL 31303030\r\nAUTH ANONYMOUS\r\nBEGIN\r\n", 0);
        assert_eq!(out, "REJECTED EXTERNAL\r\nREJECTED EXTERNAL\r\n");
        assert!(res.unwrap_err().contains("BEGIN before"));
    }

    #[test]
    fn garbage_ends_it() {
        assert!(exchange(b"GET / HTTP/1.1\r\n", 0).1.unwrap_err().contains("NUL"));
        assert!(exchange(b"\0\n", 0).1.unwrap_err().contains("\\r\\n"));
        assert!(exchange(b"\0AUTH\xff\r\n", 0).1.unwrap_err().contains("ASCII"));
        let long = [b"\0".as_slice(), &[b'A'; 4096]].concat();
        assert!(exchange(&long, 0).1.unwrap_err().contains("too long"));
        let many = [b"\0".as_slice(), &b"NOPE\r\n".repeat(100)].concat();
        assert!(exchange(&many, 0).1.unwrap_err().contains("too many"));
        assert!(exchange(b"\0AUTH EXTERNAL 30\r\n", 0).1.unwrap_err().contains("hung up"));
        assert!(exchange(b"", 0).1.unwrap_err().contains("hung up"));
    }

    #[test]
    fn external_ids() {
        assert!(external_id_matches("30", 0));
        assert!(external_id_matches("31303030", 1000));
        assert!(!external_id_matches("31303030", 0));
        assert!(!external_id_matches("3", 0));
        assert!(!external_id_matches("zz", 0));
        assert!(!external_id_matches("2d31", 0)); // "-1"
        assert!(!external_id_matches("", 0));
    }
}
