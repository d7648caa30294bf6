//! HTTP/1.1 on the wire, for the load's hot path: the request serialized once
//! ([`encode_request`]) and written as-is for every request, and a response
//! reader ([`ResponseReader`]) that parses straight from the connection's
//! read buffer with `httparse`, keeping only what a record needs (status, the
//! pod header, whether the connection may be reused) and skipping the body.
//!
//! Framing follows RFC 9112 §6.3: no body for a HEAD request, 1xx, 204 and
//! 304; `Transfer-Encoding: chunked` (decoded, trailers skipped); else
//! `Content-Length`; else the body runs until the server closes.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method};

/// Most response headers parsed (more is a malformed response for the load).
const MAX_HEADERS: usize = 64;

/// The request's bytes: request line, headers, `content-length` when there
/// is a body (or the method expects one), then the body.
pub fn encode_request(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(128 + body.len());
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    let expects_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if !headers.contains_key(http::header::CONTENT_LENGTH)
        && !headers.contains_key(http::header::TRANSFER_ENCODING)
        && (!body.is_empty() || expects_body)
    {
        out.put_slice(b"content-length: ");
        out.put_slice(body.len().to_string().as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.freeze()
}

/// A complete response, as far as the load cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Its status code.
    pub status: u16,
    /// The `x-rolltest-pod` header, when present and text.
    pub pod: Option<String>,
    /// The connection may carry another request.
    pub reusable: bool,
}

/// What [`ResponseReader::feed`] made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed; the first `usize` bytes given were consumed
    /// (body bytes, finished lines) and the rest (an unfinished head or
    /// line) must be given again, with what arrives next.
    More(usize),
    /// The response is complete; the first `usize` bytes given belonged to it.
    Done(Response, usize),
}

/// A response that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The status line or headers are not HTTP/1.x.
    #[error("invalid HTTP response: {0}")]
    Head(String),
    /// The response head is larger than the reader accepts.
    #[error("response head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// A `Content-Length` that is not a number (or several that differ).
    #[error("invalid content-length in the response")]
    ContentLength,
    /// The chunked body is malformed.
    #[error("invalid chunked body in the response")]
    Chunk,
}

/// Where the reader is in the current response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the status line and headers.
    Head,
    /// `n` more body bytes.
    Length(u64),
    /// A chunk-size line.
    ChunkSize,
    /// `n` more bytes of chunk data.
    ChunkData(u64),
    /// The CRLF after a chunk's data (`n` of its 2 bytes still to come).
    ChunkEnd(u8),
    /// Trailer lines up to the empty line.
    Trailers,
    /// Everything until the server closes.
    UntilClose,
}

/// Reads one response after another from a connection's bytes.
#[derive(Debug)]
pub struct ResponseReader {
    head_request: bool,
    max_head: usize,
    state: State,
    /// The head of the response being read, once parsed.
    partial: Option<Response>,
}

impl ResponseReader {
    /// A reader for responses to `method` (a HEAD response has no body),
    /// accepting heads up to `max_head` bytes.
    pub fn new(method: &Method, max_head: usize) -> Self {
        ResponseReader {
            head_request: *method == Method::HEAD,
            max_head,
            state: State::Head,
            partial: None,
        }
    }

    /// The status of the response being read, once its head has arrived.
    pub fn status(&self) -> Option<u16> {
        self.partial.as_ref().map(|r| r.status)
    }

    /// The pod header of the response being read, once its head has arrived.
    pub fn take_pod(&mut self) -> Option<String> {
        self.partial.as_mut().and_then(|r| r.pod.take())
    }

    /// Completes a body that ran until the server closed.
    pub fn close(&mut self) -> Option<Response> {
        if self.state != State::UntilClose {
            return None;
        }
        self.state = State::Head;
        self.partial.take()
    }

    /// Consumes what it can of `buf`: [`Progress::More`] with how many bytes
    /// it consumed when the response is not complete yet, or
    /// [`Progress::Done`] with how many bytes the response took.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Progress, ParseError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let Some(n) = self.parse_head(rest)? else {
                        return Ok(Progress::More(pos));
                    };
                    pos += n;
                }
                State::Length(0) => return Ok(self.done(pos)),
                State::Length(left) => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    self.state = State::Length(left - take);
                    if left - take > 0 {
                        return Ok(Progress::More(pos));
                    }
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        pos += n;
                        self.state = State::Trailers;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        pos += n;
                        self.state = State::ChunkData(size);
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > 1024 {
                            return Err(ParseError::Chunk);
                        }
                        return Ok(Progress::More(pos));
                    }
                    Err(_) => return Err(ParseError::Chunk),
                },
                State::ChunkData(left) => {
                    let take = left.min(rest.len() as u64);
                    pos += take as usize;
                    if left - take > 0 {
                        self.state = State::ChunkData(left - take);
                        return Ok(Progress::More(pos));
                    }
                    self.state = State::ChunkEnd(2);
                }
                State::ChunkEnd(left) => {
                    let Some(&byte) = rest.first() else {
                        return Ok(Progress::More(pos));
                    };
                    let expected = if left == 2 { b'\r' } else { b'\n' };
                    if byte != expected {
                        return Err(ParseError::Chunk);
                    }
                    pos += 1;
                    self.state = if left == 2 {
                        State::ChunkEnd(1)
                    } else {
                        State::ChunkSize
                    };
                }
                State::Trailers => {
                    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                        if rest.len() > self.max_head {
                            return Err(ParseError::HeadTooLarge(self.max_head));
                        }
                        return Ok(Progress::More(pos));
                    };
                    pos += end + 2;
                    if end == 0 {
                        return Ok(self.done(pos));
                    }
                }
                State::UntilClose => return Ok(Progress::More(buf.len())),
            }
        }
    }

    fn done(&mut self, pos: usize) -> Progress {
        self.state = State::Head;
        match self.partial.take() {
            Some(response) => Progress::Done(response, pos),
            // Unreachable by construction: a body state follows a parsed head.
            None => Progress::Done(
                Response {
                    status: 0,
                    pod: None,
                    reusable: false,
                },
                pos,
            ),
        }
    }

    /// Parses a head at the start of `buf`; `Some(len)` once complete
    /// (the state then says how the body is framed).
    fn parse_head(&mut self, buf: &[u8]) -> Result<Option<usize>, ParseError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() > self.max_head {
                    return Err(ParseError::HeadTooLarge(self.max_head));
                }
                return Ok(None);
            }
            Err(e) => return Err(ParseError::Head(e.to_string())),
        };
        let status = parsed.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            // An interim response (100 Continue, 103 Early Hints): the final one follows.
            return Ok(Some(len));
        }
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut close = parsed.version == Some(0);
        let mut pod = None;
        for header in parsed.headers.iter() {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or(ParseError::ContentLength)?;
                if content_length.is_some_and(|earlier| earlier != value) {
                    return Err(ParseError::ContentLength);
                }
                content_length = Some(value);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = header
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in header.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            } else if name.eq_ignore_ascii_case(crate::client::POD_HEADER) {
                pod = std::str::from_utf8(header.value).ok().map(str::to_string);
            }
        }
        let no_body = self.head_request || status == 204 || status == 304 || status == 101;
        self.state = if no_body {
            State::Length(0)
        } else if chunked {
            State::ChunkSize
        } else if let Some(n) = content_length {
            State::Length(n)
        } else {
            close = true;
            State::UntilClose
        };
        self.partial = Some(Response {
            status,
            pod,
            reusable: !close && status != 101,
        });
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader() -> ResponseReader {
        ResponseReader::new(&Method::GET, 16 * 1024)
    }

    /// Feeds `bytes` in pieces of `step`, as a connection would, keeping
    /// unconsumed line bytes like the client does; returns the responses and
    /// the bytes left after the last one.
    fn feed_in_pieces(r: &mut ResponseReader, bytes: &[u8], step: usize) -> Vec<Response> {
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        for piece in bytes.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match r.feed(&buf).expect("parses") {
                    Progress::Done(resp, n) => {
                        out.push(resp);
                        buf.drain(..n);
                        if buf.is_empty() {
                            break;
                        }
                    }
                    Progress::More(n) => {
                        buf.drain(..n);
                        break;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn encodes_the_request_once_as_hyper_would() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, "127.0.0.1:8080".parse().unwrap());
        headers.insert(http::header::USER_AGENT, "rolltest".parse().unwrap());
        let get = encode_request(&Method::GET, "/a?b=1", &headers, b"");
        assert_eq!(
            &get[..],
            b"GET /a?b=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nuser-agent: rolltest\r\n\r\n"
        );
        let post = encode_request(&Method::POST, "/", &headers, b"{}");
        assert!(post.ends_with(b"content-length: 2\r\n\r\n{}"), "{post:?}");
        let empty_post = encode_request(&Method::POST, "/", &headers, b"");
        assert!(empty_post.ends_with(b"content-length: 0\r\n\r\n"));
        headers.insert(http::header::CONTENT_LENGTH, "2".parse().unwrap());
        let own = encode_request(&Method::PUT, "/", &headers, b"{}");
        assert_eq!(
            String::from_utf8_lossy(&own)
                .matches("content-length")
                .count(),
            1
        );
    }

    #[test]
    fn content_length_responses_back_to_back_in_any_pieces() {
        let one = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Rolltest-Pod: api-1\r\n\r\nhello";
        let two = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        let all = [&one[..], &two[..]].concat();
        for step in [1, 2, 7, 64, all.len()] {
            let got = feed_in_pieces(&mut reader(), &all, step);
            assert_eq!(
                got,
                vec![
                    Response {
                        status: 200,
                        pod: Some("api-1".into()),
                        reusable: true
                    },
                    Response {
                        status: 503,
                        pod: None,
                        reusable: true
                    },
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nTrailer: x\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n";
        for step in [1, 3, 16, body.len()] {
            let got = feed_in_pieces(&mut reader(), body, step);
            assert_eq!(
                got.iter().map(|r| r.status).collect::<Vec<_>>(),
                [200, 204],
                "step {step}"
            );
        }
        let mut r = reader();
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX";
        assert_eq!(r.feed(bad), Err(ParseError::Chunk));
    }

    #[test]
    fn connection_reuse_follows_the_server() {
        let cases: &[(&[u8], bool)] = &[
            (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n",
                true,
            ),
        ];
        for (bytes, reusable) in cases {
            match reader().feed(bytes).expect("parses") {
                Progress::Done(r, n) => {
                    assert_eq!(r.reusable, *reusable, "{}", String::from_utf8_lossy(bytes));
                    assert_eq!(n, bytes.len());
                }
                Progress::More(_) => panic!("incomplete"),
            }
        }
    }

    #[test]
    fn a_body_without_length_runs_until_the_close() {
        let mut r = reader();
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body").expect("parses"),
            Progress::More(28)
        );
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.feed(b"more body").expect("parses"), Progress::More(9));
        let done = r.close().expect("complete at the close");
        assert_eq!((done.status, done.reusable), (200, false));
    }

    #[test]
    fn no_body_for_head_204_304_and_interim_responses_are_skipped() {
        let mut head = ResponseReader::new(&Method::HEAD, 1024);
        let bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n";
        assert!(matches!(head.feed(bytes), Ok(Progress::Done(_, n)) if n == bytes.len()));
        let bytes =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n";
        match reader().feed(bytes).expect("parses") {
            Progress::Done(r, n) => {
                assert_eq!(r.status, 304);
                assert_eq!(n, bytes.len());
            }
            Progress::More(_) => panic!("incomplete"),
        }
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(matches!(
            reader().feed(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ParseError::Head(_))
        ));
        assert_eq!(
            reader().feed(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"),
            Err(ParseError::ContentLength)
        );
        let mut small = ResponseReader::new(&Method::GET, 32);
        assert_eq!(
            small.feed(b"HTTP/1.1 200 OK\r\nx-long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Err(ParseError::HeadTooLarge(32))
        );
    }
}
