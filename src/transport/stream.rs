//! Framing SIP over a byte stream (RFC 3261 §18.3): the head ends at the
//! first empty line and the body is Content-Length bytes long.

use bytes::{Bytes, BytesMut};

#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Message(Bytes),
    /// A CRLF CRLF keep-alive ping (RFC 5626 §3.5.1); answered with CRLF.
    Ping,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("unreadable Content-Length")]
    BadContentLength,
}

/// Takes the next complete frame off `buf`, if there is one.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    if buf.starts_with(b"\r\n\r\n") {
        let _ = buf.split_to(4);
        return Ok(Some(Frame::Ping));
    }
    // Lone CRLFs between messages are ignored (§7.5).
    let skip = buf
        .iter()
        .take_while(|&&c| c == b'\r' || c == b'\n')
        .count();
    if skip > 0 && skip < buf.len() {
        let _ = buf.split_to(skip);
    } else if skip == buf.len() {
        if skip >= 4 {
            buf.clear();
        }
        return Ok(None);
    }
    let Some(head_end) = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        if buf.len() > max {
            return Err(FrameError::TooLarge(max));
        }
        return Ok(None);
    };
    let length = content_length(&buf[..head_end])?.unwrap_or(0);
    let total = head_end
        .checked_add(length)
        .ok_or(FrameError::TooLarge(max))?;
    if total > max {
        return Err(FrameError::TooLarge(max));
    }
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame::Message(buf.split_to(total).freeze())))
}

fn content_length(head: &[u8]) -> Result<Option<usize>, FrameError> {
    for line in head.split(|&c| c == b'\n').skip(1) {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let v = line[colon + 1..].trim_ascii();
            return std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or(FrameError::BadContentLength);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined_messages() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc";
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&msg[..10]);
        assert_eq!(next_frame(&mut buf, 4096), Ok(None));
        buf.extend_from_slice(&msg[10..]);
        buf.extend_from_slice(b"\r\n\r\n");
        buf.extend_from_slice(msg);
        assert_eq!(
            next_frame(&mut buf, 4096),
            Ok(Some(Frame::Message(Bytes::from_static(msg))))
        );
        assert_eq!(next_frame(&mut buf, 4096), Ok(Some(Frame::Ping)));
        assert_eq!(
            next_frame(&mut buf, 4096),
            Ok(Some(Frame::Message(Bytes::from_static(msg))))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversized_and_bad_length() {
        let mut buf =
            BytesMut::from(&b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 999999\r\n\r\n"[..]);
        assert_eq!(next_frame(&mut buf, 4096), Err(FrameError::TooLarge(4096)));
        let mut buf = BytesMut::from(&b"INVITE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n"[..]);
        assert_eq!(
            next_frame(&mut buf, 4096),
            Err(FrameError::BadContentLength)
        );
        let mut buf = BytesMut::from(&vec![b'a'; 5000][..]);
        assert_eq!(next_frame(&mut buf, 4096), Err(FrameError::TooLarge(4096)));
    }
}
