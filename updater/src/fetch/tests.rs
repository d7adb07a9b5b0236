//! Downloads against a real HTTP/1.1 server on 127.0.0.1 (std's
//! TcpListener: the test needs to drop the connection after exactly N body
//! bytes, which a server crate's keep-alive handling hides).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::*;

/// What the server does per connection: cut the body after this many
/// bytes (`None`: send it whole); which file version (ETag) it serves.
#[derive(Clone)]
struct Plan {
    cuts: Vec<Option<usize>>,
    etags: Vec<&'static str>,
    /// The status of each connection's answer (the last repeats); a
    /// status other than 200 comes without a body.
    statuses: Vec<u16>,
}

/// The request lines the server saw: (range, if-range) per connection.
type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

fn serve(data: Vec<u8>, plan: Plan) -> (String, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/berth-0.2.0.bundle", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut range, mut if_range) = (None, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range:") {
                    range = Some(v.trim().to_string());
                }
                if lower.starts_with("if-range:") {
                    if_range = Some(line["if-range:".len()..].trim().to_string());
                }
            }
            log.lock().unwrap().push((range.clone(), if_range.clone()));
            let etag = format!("\"{}\"", plan.etags.get(i).or(plan.etags.last()).unwrap());
            let status = plan.statuses.get(i).or(plan.statuses.last()).copied().unwrap_or(200);
            if status != 200 {
                let _ = write!(stream, "HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|_| if_range.as_deref().is_none_or(|v| v == etag));
            let (head, body) = match start {
                Some(s) => (
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{}\r\nContent-Length: {}\r\n",
                        data.len() - 1,
                        data.len(),
                        data.len() - s
                    ),
                    &data[s..],
                ),
                None => (format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", data.len()), &data[..]),
            };
            let cut = plan.cuts.get(i).copied().flatten().unwrap_or(body.len()).min(body.len());
            let _ = write!(stream, "{head}ETag: {etag}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(&body[..cut]);
            let _ = stream.flush();
            // Dropping the stream closes the connection, mid-body when cut.
        }
    });
    (url, seen)
}

fn data() -> Vec<u8> {
    (0..200_000u32).map(|i| (i % 241) as u8).collect()
}

fn plan(cuts: Vec<Option<usize>>) -> Plan {
    Plan { cuts, etags: vec!["v1"], statuses: vec![200] }
}

#[test]
fn a_path_is_read_as_a_file() {
    let path = std::env::temp_dir().join(format!("berth-fetch-{}", std::process::id()));
    std::fs::write(&path, b"bundle bytes").unwrap();
    let (mut r, len) = open(path.to_str().unwrap(), 0).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!((got.as_slice(), len), (&b"bundle bytes"[..], Some(12)));
    let e = open("/nonexistent/berth.bundle", 0).err().unwrap();
    assert!(e.to_string().contains("/nonexistent/berth.bundle"), "{e}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_whole_download_gives_the_bytes_and_the_length() {
    let (url, seen) = serve(data(), plan(vec![None]));
    let (mut r, len) = open(&url, 0).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, data());
    assert_eq!(len, Some(data().len() as u64));
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[test]
fn a_dropped_download_resumes_where_it_stopped() {
    let (url, seen) = serve(data(), plan(vec![Some(70_000), Some(50_000), None]));
    let (mut r, _) = open(&url, 5).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, data(), "the resumed bytes are spliced at the right offsets");
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [
            (None, None),
            (Some("bytes=70000-".into()), Some("\"v1\"".into())),
            (Some("bytes=120000-".into()), Some("\"v1\"".into())),
        ]
    );
}

#[test]
fn it_gives_up_after_the_retries_naming_the_url_and_the_offset() {
    let (url, seen) = serve(data(), plan(vec![Some(1000); 10]));
    let (mut r, _) = open(&url, 2).unwrap();
    let mut got = Vec::new();
    let e = r.read_to_end(&mut got).unwrap_err();
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<FetchError>()).unwrap();
    assert!(matches!(inner, FetchError::GaveUp { offset: 3000, retries: 2, .. }), "{inner}");
    assert!(inner.to_string().contains(&url), "{inner}");
    assert_eq!(got.len(), 3000);
    assert_eq!(seen.lock().unwrap().len(), 3, "one request and two resumes");
}

#[test]
fn a_file_changed_on_the_server_is_not_spliced() {
    let (url, _) = serve(data(), Plan { cuts: vec![Some(1000), None], etags: vec!["v1", "v2"], statuses: vec![200] });
    let (mut r, _) = open(&url, 5).unwrap();
    let e = r.read_to_end(&mut Vec::new()).unwrap_err();
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<FetchError>()).unwrap();
    assert!(matches!(inner, FetchError::Changed { offset: 1000, .. }), "{inner}");
}

#[test]
fn an_error_status_is_refused_at_open() {
    let (url, seen) = serve(data(), Plan { cuts: vec![], etags: vec!["v1"], statuses: vec![404] });
    let e = open(&url, 3).err().unwrap();
    assert!(matches!(e, FetchError::Status { status: 404, offset: 0, .. }), "{e}");
    assert!(e.to_string().contains(&url));
    assert_eq!(seen.lock().unwrap().len(), 1, "a 404 is not retried");
}

#[test]
fn a_server_that_says_not_now_is_retried_at_open_and_on_resume() {
    // 503 at open, a drop at 70000, 502 on the first resume, then the rest.
    let plan = Plan { cuts: vec![None, Some(70_000)], etags: vec!["v1"], statuses: vec![503, 200, 502, 200] };
    let (url, seen) = serve(data(), plan);
    let (mut r, _) = open(&url, 5).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!(got, data());
    let ranges: Vec<Option<String>> = seen.lock().unwrap().iter().map(|(r, _)| r.clone()).collect();
    assert_eq!(ranges, [None, None, Some("bytes=70000-".into()), Some("bytes=70000-".into())]);
    // Past the retries, the status is the error.
    let (url, _) = serve(data(), Plan { cuts: vec![], etags: vec!["v1"], statuses: vec![503] });
    let e = open(&url, 1).err().unwrap();
    assert!(matches!(e, FetchError::Status { status: 503, .. }), "{e}");
}

#[test]
fn a_server_not_up_yet_is_retried_at_open() {
    // Reserve a port, free it, and start serving there only after a while.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let body = data();
    let served = body.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", served.len()).unwrap();
        stream.write_all(&served).unwrap();
    });
    let (mut r, len) = open(&format!("http://127.0.0.1:{port}/b.bundle"), 5).unwrap();
    let mut got = Vec::new();
    r.read_to_end(&mut got).unwrap();
    assert_eq!((len, got), (Some(body.len() as u64), body));
    // Without retries, the refused connection is the error, naming the URL.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = open(&format!("http://127.0.0.1:{port}/b.bundle"), 0).err().unwrap();
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn backoff_doubles_and_is_bounded() {
    assert_eq!(backoff(1), std::time::Duration::from_millis(500));
    assert_eq!(backoff(2), std::time::Duration::from_secs(1));
    assert_eq!(backoff(5), std::time::Duration::from_secs(8));
    assert_eq!(backoff(40), std::time::Duration::from_secs(16));
}
