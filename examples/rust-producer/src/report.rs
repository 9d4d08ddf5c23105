//! One result document as a few lines of `key=value` text: the job, each image with its
//! codes, and the timings. What a person reads, and what a script can grep.
//!
//! ```text
//! job=3f0c... ok=true request_id=inv-1042 worker=host/2f0c backend=onnx
//!   image=file:///in/inv-1042.png ok=true codes=1 stages=fast
//!     code stage=fast format=QRCode scheme=epc.sct text="BCD\n002\n1\nSCT\n..."
//!     timings_ms queue_wait=3.1 fetch=0.4 read=0.0 decode_image=3.0 fast=1.1 total=9.0
//! ```

use crate::json::{quote, Value};

/// The longest code text shown, in characters (the whole text is in `--json`).
const TEXT_SHOWN: usize = 60;

/// A value in a `key=value` pair: bare when it is plain, else JSON-quoted.
fn shown(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '=');
    if plain {
        text.to_string()
    } else {
        quote(text)
    }
}

fn field<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn error_code(value: &Value) -> Option<&str> {
    value
        .get("error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
}

/// `epc.sct`, or `epc.sct!iban+total` when checks failed (the read stands either way).
fn scheme(payload: Option<&Value>) -> String {
    let payload = match payload {
        Some(p) if p.as_object().is_some() => p,
        _ => return "-".to_string(),
    };
    let name = field(payload, "scheme").unwrap_or("?").to_string();
    if payload.get("ok").and_then(Value::as_bool).unwrap_or(true) {
        return name;
    }
    let mut failed: Vec<&str> = payload
        .get("checks")
        .and_then(Value::as_array)
        .unwrap_or(&[])
        .iter()
        .filter(|check| field(check, "outcome") == Some("failed"))
        .filter_map(|check| field(check, "name"))
        .collect();
    if payload
        .get("problems")
        .and_then(Value::as_array)
        .map_or(false, |p| !p.is_empty())
    {
        failed.push("problems");
    }
    format!("{}!{}", name, failed.join("+"))
}

fn code_text(code: &Value) -> String {
    if field(code, "content_type") == Some("Binary") {
        // Binary payloads are exact only in bytes_b64: show their size.
        let b64 = field(code, "bytes_b64").unwrap_or("");
        let padding = b64.bytes().rev().take_while(|b| *b == b'=').count();
        return format!(
            "<binary,{}bytes>",
            (b64.len() / 4 * 3).saturating_sub(padding)
        );
    }
    let text = field(code, "text").unwrap_or("");
    let cut: String = text.chars().take(TEXT_SHOWN).collect();
    if cut.len() < text.len() {
        quote(&(cut + "..."))
    } else {
        quote(&cut)
    }
}

/// Timings shown first, in the order a job lives them; the stages follow as the worker
/// wrote them, and `total` comes last.
const FIRST: [&str; 4] = ["queue_wait", "fetch", "read", "decode_image"];

/// `timings_ms queue_wait=3.1 fetch=0.4 ... fast=1.1 total=9.0`
fn timings(value: &Value) -> Option<String> {
    let fields = value.get("timings_ms")?.as_object()?;
    let rank = |name: &str| match FIRST.iter().position(|first| *first == name) {
        Some(at) => at,
        None if name == "total" => FIRST.len() + 1,
        None => FIRST.len(),
    };
    let mut ordered: Vec<&(String, Value)> = fields.iter().collect();
    ordered.sort_by_key(|(name, _)| rank(name)); // stable: stages keep their order
    let parts: Vec<String> = ordered
        .iter()
        .map(|(stage, ms)| match ms.as_f64() {
            Some(ms) => format!("{}={:.1}", stage, ms),
            None => format!("{}=-", stage),
        })
        .collect();
    Some(format!("timings_ms {}", parts.join(" ")))
}

fn item_lines(item: &Value, indent: &str, out: &mut Vec<String>) {
    let codes = item.get("codes").and_then(Value::as_array).unwrap_or(&[]);
    let mut line = format!(
        "{}image={} ok={}",
        indent,
        shown(field(item, "image").unwrap_or("-")),
        item.get("ok").and_then(Value::as_bool).unwrap_or(false)
    );
    match item.get("error").filter(|e| **e != Value::Null) {
        Some(error) => {
            line += &format!(" error={}", shown(field(error, "code").unwrap_or("?")));
            if let Some(message) = field(error, "message") {
                line += &format!(" message={}", quote(message));
            }
        }
        None => {
            let mut stages: Vec<&str> = codes.iter().filter_map(|c| field(c, "stage")).collect();
            stages.sort_unstable();
            stages.dedup();
            let stages = if stages.is_empty() {
                "-".to_string()
            } else {
                stages.join(",")
            };
            line += &format!(" codes={} stages={}", codes.len(), stages);
        }
    }
    out.push(line);
    for code in codes {
        out.push(format!(
            "{}  code stage={} format={} page={} scheme={} text={}",
            indent,
            shown(field(code, "stage").unwrap_or("?")),
            shown(field(code, "format").unwrap_or("?")),
            code.get("page")
                .and_then(Value::as_f64)
                .map_or("?".to_string(), |p| p.to_string()),
            shown(&scheme(code.get("payload"))),
            code_text(code),
        ));
    }
    if let Some(line) = timings(item) {
        out.push(format!("{}  {}", indent, line));
    }
}

/// The lines for one result document (single or batch). `entry` is the stream entry id
/// when it was collected from `qrw:results`.
pub fn lines(result: &Value, entry: Option<&str>) -> Vec<String> {
    let ok = result.get("ok").and_then(Value::as_bool).unwrap_or(false);
    let mut head = format!(
        "job={} ok={}",
        shown(field(result, "job_id").unwrap_or("?")),
        ok
    );
    if let Some(code) = error_code(result) {
        head += &format!(" error={}", shown(code));
    }
    if let Some(id) = field(result, "request_id") {
        head += &format!(" request_id={}", shown(id));
    }
    if let Some(entry) = entry {
        head += &format!(" entry={}", shown(entry));
    }
    for key in ["worker", "backend"] {
        if let Some(text) = field(result, key) {
            head += &format!(" {}={}", key, shown(text));
        }
    }
    if let Some(reply_error) = result
        .get("reply_error")
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
    {
        head += &format!(" reply_error={}", shown(reply_error));
    }
    let mut out = vec![head];
    match result.get("items").and_then(Value::as_array) {
        Some(items) => {
            for item in items {
                item_lines(item, "  ", &mut out);
            }
            // The job's own timings: its queue wait and the whole batch.
            if let Some(line) = timings(result) {
                out.push(format!("  job {}", line));
            }
            // A batch refused before any image was read has no items: say why.
            if items.is_empty() {
                if let Some(message) = result
                    .get("error")
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                {
                    out.push(format!("  message={}", quote(message)));
                }
            }
        }
        None => item_lines(result, "  ", &mut out),
    }
    out
}

pub fn is_ok(result: &Value) -> bool {
    result.get("ok").and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse;

    #[test]
    fn a_single_result_shows_codes_and_timings() {
        let doc = br#"{"job_id":"j1","request_id":"inv 7","ok":true,"error":null,
            "image":"file:///in/a.png","worker":"h/1","backend":"onnx",
            "codes":[{"text":"BCD\n002","stage":"fast","format":"QRCode","page":0,
                      "payload":{"scheme":"epc.sct","ok":false,
                                 "checks":[{"name":"iban","outcome":"failed"}],"problems":[]}}],
            "timings_ms":{"fast":1,"total":9.0,"decode_image":2,"queue_wait":3.14}}"#;
        let out = lines(&parse(doc).unwrap(), None);
        assert_eq!(
            out,
            vec![
                r#"job=j1 ok=true request_id="inv 7" worker=h/1 backend=onnx"#,
                "  image=file:///in/a.png ok=true codes=1 stages=fast",
                r#"    code stage=fast format=QRCode page=0 scheme=epc.sct!iban text="BCD\n002""#,
                "    timings_ms queue_wait=3.1 decode_image=2.0 fast=1.0 total=9.0",
            ]
        );
    }

    #[test]
    fn a_failure_shows_its_code_and_message() {
        let doc = br#"{"job_id":"j2","ok":false,"codes":[],"image":"file:///etc/hosts",
            "error":{"code":"refused_reference","message":"outside the roots"}}"#;
        let out = lines(&parse(doc).unwrap(), Some("1-0"));
        assert_eq!(out[0], "job=j2 ok=false error=refused_reference entry=1-0");
        assert_eq!(
            out[1],
            r#"  image=file:///etc/hosts ok=false error=refused_reference message="outside the roots""#
        );
    }
}
