//! `write_files`.

use std::io::Read;

use base64::Engine;

use crate::diag::Place;
use crate::model::WriteFile;
use crate::tree::{Node, Scalar, Style, Value};

use super::read::{toml_int, yaml11_int, Ctx};
use super::valid;

/// The largest decompressed content (gzip) accepted: 64 MiB.
pub(crate) const MAX_INFLATED: u64 = 64 << 20;

pub(crate) fn write_files(cx: &mut Ctx, n: &Node, at: &Place) -> Vec<WriteFile> {
    let mut out: Vec<WriteFile> = Vec::new();
    let Some(items) = cx.list(n, at) else { return out };
    // All contents are held in memory (by PID1, at boot): one budget for
    // them together, not [`MAX_INFLATED`] for each of hundreds.
    let mut total: u64 = 0;
    for (i, item) in items.iter().enumerate() {
        let p = at.item(item.line, i);
        if let Some(f) = write_file(cx, item, &p) {
            total = total.saturating_add(f.content.len() as u64);
            if total > MAX_INFLATED {
                cx.error(&p, format!("the contents of write_files are more than {} MiB together", MAX_INFLATED >> 20));
                continue;
            }
            out.push(f);
        }
    }
    out
}

fn write_file(cx: &mut Ctx, n: &Node, at: &Place) -> Option<WriteFile> {
    let entries = cx.map(n, at)?;
    let before = cx.errors.len();
    let mut f = WriteFile {
        path: String::new(),
        content: Vec::new(),
        mode: 0o644,
        owner: ("root".into(), "root".into()),
        append: false,
        defer: false,
        at: at.clone(),
    };
    let mut content: Option<(&Node, Place)> = None;
    let mut encoding = ("text/plain".to_string(), at.clone());
    let mut has_path = false;
    for (k, v) in entries {
        let p = at.child(k.line, &k.name);
        match k.name.as_str() {
            "path" => {
                has_path = true;
                if let Some(s) = cx.nonempty(v, &p) {
                    match valid::writable_path(&s) {
                        Ok(s) => f.path = s,
                        Err(e) => cx.error(&p, e),
                    }
                }
            }
            "content" => content = Some((v, p)),
            "encoding" => {
                if let Some(s) = cx.string(v, &p) {
                    encoding = (s, p);
                }
            }
            "permissions" => {
                if let Some(m) = mode(cx, v, &p) {
                    f.mode = m;
                }
            }
            "owner" => {
                if let Some(s) = cx.nonempty(v, &p) {
                    let (u, g) = s.split_once(':').unwrap_or((s.as_str(), "root"));
                    // `1000:1000`: one error, not the same one twice.
                    let names = if u == g { vec![u] } else { vec![u, g] };
                    for name in names {
                        if let Err(e) = valid::account(name) {
                            cx.error(&p, e);
                        }
                    }
                    f.owner = (u.to_string(), g.to_string());
                }
            }
            "append" => f.append = cx.bool(v, &p).unwrap_or(false),
            "defer" => f.defer = cx.bool(v, &p).unwrap_or(false),
            "source" => {
                cx.warn(&p, "not implemented on Berth (no download of file contents): `content` is written instead")
            }
            _ => cx.unknown(&p, ""),
        }
    }
    if !has_path {
        cx.error(at, "`path` is required");
    }
    if let Some((node, p)) = content {
        if let Some(bytes) = decode(cx, node, &p, &encoding.0, &encoding.1) {
            f.content = bytes;
        }
    } else if !matches!(
        encoding.0.as_str(),
        "text/plain" | "gz" | "gzip" | "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" | "b64" | "base64"
    ) {
        cx.error(&encoding.1, format!("unknown encoding `{}`", encoding.0));
    }
    (cx.errors.len() == before).then_some(f)
}

/// `permissions`: an octal string (`'0644'`, `'0o644'`, `'644'`), or an
/// integer, which YAML 1.1 reads from a plain `0644` as octal (420). A
/// plain `644` is the decimal 644 (0o1204) to cloud-init: taken, with a
/// warning.
fn mode(cx: &mut Ctx, n: &Node, at: &Place) -> Option<u32> {
    let v: Option<i64> = match &n.value {
        Value::Scalar(Scalar { text, style: Style::Quoted }) => {
            let t = text.trim();
            let t = t.strip_prefix("0o").unwrap_or(t);
            i64::from_str_radix(t, 8).ok()
        }
        Value::Scalar(Scalar { text, style: Style::Plain }) => {
            let v = yaml11_int(text).or_else(|| text.strip_prefix("0o").and_then(|t| i64::from_str_radix(t, 8).ok()));
            if let Some(v) = v {
                if !text.starts_with('0') && v > 7 {
                    cx.warn(at, format!("`{text}` without a leading 0 is the decimal {text} (0o{v:o}) in YAML 1.1; write '0{text}' if octal was meant"));
                }
            }
            v
        }
        Value::Scalar(Scalar { text, style: Style::TomlInteger }) => {
            let v = toml_int(text);
            if let Some(v) = v.filter(|v| !text.starts_with("0o") && *v > 7) {
                cx.warn(
                    at,
                    format!(
                        "`{text}` is the decimal {text} (0o{v:o}); write 0o{text} (or \"0{text}\") if octal was meant"
                    ),
                );
            }
            v
        }
        _ => {
            cx.error(at, format!("expected permissions (an octal string such as \"0644\"), found {}", n.kind()));
            return None;
        }
    };
    match v {
        Some(v) if (0..=0o7777).contains(&v) => u32::try_from(v).ok(),
        _ => {
            cx.error(at, "expected permissions: an octal mode up to 07777 (\"0644\")");
            None
        }
    }
}

/// `content` decoded by `encoding`.
fn decode(cx: &mut Ctx, n: &Node, at: &Place, encoding: &str, enc_at: &Place) -> Option<Vec<u8>> {
    let raw: Vec<u8> = match &n.value {
        Value::Binary(b) => b.clone(),
        Value::Null => Vec::new(),
        _ => cx.string(n, at)?.into_bytes(),
    };
    let (b64, gz) = match encoding {
        "text/plain" => (false, false),
        "b64" | "base64" => (true, false),
        "gz" | "gzip" => (false, true),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => (true, true),
        other => {
            cx.error(enc_at, format!("unknown encoding `{other}` (b64, base64, gz, gzip, gz+b64, gz+base64, gzip+b64, gzip+base64, text/plain)"));
            return None;
        }
    };
    let mut data = raw;
    if b64 {
        let clean: Vec<u8> = data.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
        match base64::engine::general_purpose::STANDARD.decode(&clean) {
            Ok(d) => data = d,
            Err(e) => {
                cx.error(at, format!("not valid base64 (encoding `{encoding}`): {e}"));
                return None;
            }
        }
    }
    if gz {
        match gunzip(&data) {
            Ok(d) => data = d,
            Err(e) => {
                cx.error(at, format!("not valid gzip (encoding `{encoding}`): {e}"));
                return None;
            }
        }
    }
    Some(data)
}

/// gzip -> bytes, at most [`MAX_INFLATED`].
pub(crate) fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut r = flate2::read::GzDecoder::new(data).take(MAX_INFLATED + 1);
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(format!("more than {} MiB once decompressed", MAX_INFLATED >> 20));
    }
    Ok(out)
}
