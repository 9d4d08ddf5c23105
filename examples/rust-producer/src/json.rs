//! Just enough JSON: a writer for the job payload and a strict reader for results.
//!
//! Production code would derive `serde::Serialize` / `Deserialize` on payload and result
//! structs and call `serde_json::to_string` / `from_slice`; `Value` here plays the part of
//! `serde_json::Value` (objects keep their order, numbers keep their text).

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number as written (JSON text), so nothing is lost or reformatted.
    Number(String),
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl Value {
    pub fn int(n: i64) -> Value {
        Value::Number(n.to_string())
    }

    pub fn str<S: Into<String>>(text: S) -> Value {
        Value::String(text.into())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(text) => text.parse().ok(),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(fields) => Some(fields),
            _ => None,
        }
    }

    /// Compact JSON text (no spaces), UTF-8 as is: what `json.dumps(..., separators=(",",
    /// ":"), ensure_ascii=False)` writes.
    pub fn to_json(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(text) => out.push_str(text),
            Value::String(text) => write_string(text, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Object(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, out);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A JSON string literal: quotes, backslashes and control characters escaped (RFC 8259).
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    write_string(text, &mut out);
    out
}

fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const MAX_DEPTH: usize = 128;

/// Parses one JSON document (RFC 8259, strict: no trailing commas, no comments).
pub fn parse(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {}", e))?;
    let mut parser = Parser {
        text: text.as_bytes(),
        at: 0,
    };
    let value = parser.value(0)?;
    parser.skip_space();
    if parser.at != parser.text.len() {
        return Err(parser.fail("text after the document"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn fail(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {}", self.at, what)
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, literal: &str) -> Result<(), String> {
        if self.text[self.at..].starts_with(literal.as_bytes()) {
            self.at += literal.len();
            Ok(())
        } else {
            Err(self.fail(&format!("expected {}", literal)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(self.fail("nested too deep"));
        }
        self.skip_space();
        match self.peek() {
            None => Err(self.fail("unexpected end")),
            Some(b'n') => self.expect("null").map(|_| Value::Null),
            Some(b't') => self.expect("true").map(|_| Value::Bool(true)),
            Some(b'f') => self.expect("false").map(|_| Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.skip_space();
                if self.peek() == Some(b']') {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_space();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Value::Array(items));
                        }
                        _ => return Err(self.fail("expected , or ]")),
                    }
                }
            }
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                self.skip_space();
                if self.peek() == Some(b'}') {
                    self.at += 1;
                    return Ok(Value::Object(fields));
                }
                loop {
                    self.skip_space();
                    if self.peek() != Some(b'"') {
                        return Err(self.fail("expected a key"));
                    }
                    let key = self.string()?;
                    self.skip_space();
                    self.expect(":")?;
                    fields.push((key, self.value(depth + 1)?));
                    self.skip_space();
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Value::Object(fields));
                        }
                        _ => return Err(self.fail("expected , or }")),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.fail("unexpected character")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let first = self.peek();
        match self.digits() {
            0 => return Err(self.fail("expected a digit")),
            n if n > 1 && first == Some(b'0') => return Err(self.fail("a leading zero")),
            _ => {}
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.fail("expected a digit after ."));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.fail("expected an exponent"));
            }
        }
        // The bytes are ASCII digits and signs: always valid UTF-8.
        Ok(Value::Number(
            String::from_utf8_lossy(&self.text[start..self.at]).into_owned(),
        ))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.fail("a short \\u escape"))?;
        let digits = std::str::from_utf8(digits).map_err(|_| self.fail("a bad \\u escape"))?;
        let code = u32::from_str_radix(digits, 16).map_err(|_| self.fail("a bad \\u escape"))?;
        self.at += 4;
        Ok(code)
    }

    fn string(&mut self) -> Result<String, String> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.at += 1;
            }
            // The input was checked to be UTF-8 and we stopped on ASCII: a whole run of chars.
            out.push_str(std::str::from_utf8(&self.text[start..self.at]).unwrap_or("\u{fffd}"));
            match self.peek() {
                None => return Err(self.fail("an unterminated string")),
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escape = self
                        .peek()
                        .ok_or_else(|| self.fail("an unterminated escape"))?;
                    self.at += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high)
                                && self.text[self.at..].starts_with(b"\\u")
                            {
                                let save = self.at;
                                self.at += 2;
                                let low = self.hex4()?;
                                if (0xDC00..0xE000).contains(&low) {
                                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                                } else {
                                    self.at = save; // read the next escape on its own
                                    high
                                }
                            } else {
                                high
                            };
                            // A lone surrogate cannot be a Rust char: U+FFFD, as the
                            // worker itself writes it.
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        _ => return Err(self.fail("an unknown escape")),
                    }
                }
                Some(_) => return Err(self.fail("a control character in a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_compact_json_with_escapes() {
        let value = Value::Object(vec![
            ("image".into(), Value::str("file:///a \"b\"\\c.png")),
            ("n".into(), Value::int(-5)),
            (
                "list".into(),
                Value::Array(vec![Value::Null, Value::Bool(true)]),
            ),
            ("ctl".into(), Value::str("a\nb\u{1}é")),
        ]);
        assert_eq!(
            value.to_json(),
            r#"{"image":"file:///a \"b\"\\c.png","n":-5,"list":[null,true],"ctl":"a\nb\u0001é"}"#
        );
    }

    #[test]
    fn reads_what_it_writes_and_what_python_writes() {
        let text = r#" {"ok": true, "codes": [{"text": "BCD\n002\u00e9 \ud83d\ude00", "n": -1.5e3}],
                       "error": null, "empty": {}, "list": []} "#;
        let value = parse(text.as_bytes()).unwrap();
        assert_eq!(value.get("ok").and_then(Value::as_bool), Some(true));
        let code = &value.get("codes").unwrap().as_array().unwrap()[0];
        assert_eq!(
            code.get("text").and_then(Value::as_str),
            Some("BCD\n002é 😀")
        );
        assert_eq!(code.get("n").and_then(Value::as_f64), Some(-1500.0));
        assert_eq!(value.get("error"), Some(&Value::Null));
        assert_eq!(parse(value.to_json().as_bytes()).unwrap(), value);
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let value = parse(br#""a\ud800b\udc00""#).unwrap();
        assert_eq!(value.as_str(), Some("a\u{fffd}b\u{fffd}"));
    }

    #[test]
    fn rejects_what_is_not_json() {
        for bad in [
            &b"{\"a\":1,}"[..],
            b"[1,]",
            b"01",
            b"1.",
            b"\"a",
            b"\"\x01\"",
            b"{a:1}",
            b"nul",
            b"[] []",
            b"\xff",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(deep.as_bytes()).unwrap_err().contains("deep"));
    }
}
