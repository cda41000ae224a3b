//! A small EDN reader: the subset Jepsen, Knossos and Porcupine histories use.
//!
//! Supported: `nil`, `true`, `false`, integers, strings (with `\"`, `\\`, `\n`, `\t`, `\r`
//! escapes), keywords, symbols, vectors `[ ]`, lists `( )`, maps `{ }`; commas are whitespace and
//! `;` starts a comment to the end of the line. Anything else (floats, tags, sets, chars) is an
//! error naming its line. Nesting is limited to [`EDN_DEPTH_MAX`] so hostile input cannot
//! overflow the stack.

use thiserror::Error;

/// The deepest nesting of collections accepted.
pub const EDN_DEPTH_MAX: usize = 64;

/// One EDN value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edn {
    /// `nil`.
    Nil,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string, unescaped.
    Str(String),
    /// A keyword, without its colon.
    Keyword(String),
    /// A symbol.
    Symbol(String),
    /// `[ ... ]`.
    Vector(Vec<Node>),
    /// `( ... )`.
    List(Vec<Node>),
    /// `{ ... }`, entries in file order.
    Map(Vec<(Node, Node)>),
}

/// A value with the line it starts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The value.
    pub value: Edn,
    /// 1-based line of its first character.
    pub line: usize,
}

impl Node {
    /// The value under keyword `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Edn::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Edn::Keyword(name) if name == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The elements, if this is a vector or a list.
    pub fn items(&self) -> Option<&[Node]> {
        match &self.value {
            Edn::Vector(items) | Edn::List(items) => Some(items),
            _ => None,
        }
    }

    /// The keyword's name, if this is a keyword.
    pub fn keyword(&self) -> Option<&str> {
        match &self.value {
            Edn::Keyword(name) => Some(name),
            _ => None,
        }
    }
}

/// Why EDN text could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct EdnError {
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Reads every top-level value in `text`. `first_line` is the line number of the text's start.
pub fn parse_all(text: &str, first_line: usize) -> Result<Vec<Node>, EdnError> {
    let mut reader = Reader {
        bytes: text.as_bytes(),
        text,
        at: 0,
        line: first_line,
    };
    let mut out = Vec::new();
    loop {
        reader.skip_blank();
        if reader.at >= reader.bytes.len() {
            return Ok(out);
        }
        out.push(reader.value(0)?);
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
    line: usize,
}

impl Reader<'_> {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, EdnError> {
        Err(EdnError {
            line: self.line,
            message: message.into(),
        })
    }

    fn skip_blank(&mut self) {
        while let Some(&b) = self.bytes.get(self.at) {
            match b {
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                b' ' | b'\t' | b'\r' | b',' => self.at += 1,
                b';' => {
                    while self.bytes.get(self.at).is_some_and(|&b| b != b'\n') {
                        self.at += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, EdnError> {
        if depth > EDN_DEPTH_MAX {
            return self.error(format!("nested deeper than {EDN_DEPTH_MAX} levels"));
        }
        self.skip_blank();
        let line = self.line;
        let Some(&b) = self.bytes.get(self.at) else {
            return self.error("unexpected end of input");
        };
        let value = match b {
            b'[' => Edn::Vector(self.sequence(b']', depth)?),
            b'(' => Edn::List(self.sequence(b')', depth)?),
            b'{' => {
                let items = self.sequence(b'}', depth)?;
                if items.len() % 2 != 0 {
                    return Err(EdnError {
                        line,
                        message: "a map needs an even number of forms".into(),
                    });
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    entries.push((k, v));
                }
                Edn::Map(entries)
            }
            b'"' => Edn::Str(self.string()?),
            b']' | b')' | b'}' => return self.error(format!("unexpected `{}`", b as char)),
            b'#' => return self.error("tagged values and sets are not supported"),
            b'\\' => return self.error("characters are not supported"),
            _ => self.atom()?,
        };
        Ok(Node { value, line })
    }

    fn sequence(&mut self, close: u8, depth: usize) -> Result<Vec<Node>, EdnError> {
        let open_line = self.line;
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.bytes.get(self.at) {
                None => {
                    return Err(EdnError {
                        line: open_line,
                        message: format!("`{}` opened here is never closed", opening(close)),
                    });
                }
                Some(&b) if b == close => {
                    self.at += 1;
                    return Ok(items);
                }
                Some(_) => items.push(self.value(depth + 1)?),
            }
        }
    }

    fn string(&mut self) -> Result<String, EdnError> {
        let open_line = self.line;
        self.at += 1;
        let mut out = String::new();
        let mut start = self.at;
        while let Some(&b) = self.bytes.get(self.at) {
            match b {
                b'"' => {
                    out.push_str(&self.text[start..self.at]);
                    self.at += 1;
                    return Ok(out);
                }
                b'\\' => {
                    out.push_str(&self.text[start..self.at]);
                    let escaped = match self.bytes.get(self.at + 1) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'n') => '\n',
                        Some(b't') => '\t',
                        Some(b'r') => '\r',
                        _ => return self.error("unsupported escape in a string"),
                    };
                    out.push(escaped);
                    self.at += 2;
                    start = self.at;
                }
                b'\n' => {
                    self.line += 1;
                    self.at += 1;
                }
                _ => self.at += 1,
            }
        }
        Err(EdnError {
            line: open_line,
            message: "string opened here is never closed".into(),
        })
    }

    fn atom(&mut self) -> Result<Edn, EdnError> {
        let start = self.at;
        while let Some(&b) = self.bytes.get(self.at) {
            if b.is_ascii_whitespace() || b",;[](){}\"".contains(&b) {
                break;
            }
            self.at += 1;
        }
        let token = &self.text[start..self.at];
        if let Some(name) = token.strip_prefix(':') {
            if name.is_empty() {
                return self.error("empty keyword");
            }
            return Ok(Edn::Keyword(name.to_string()));
        }
        match token {
            "nil" => return Ok(Edn::Nil),
            "true" => return Ok(Edn::Bool(true)),
            "false" => return Ok(Edn::Bool(false)),
            _ => {}
        }
        let Some(&first) = token.as_bytes().first() else {
            return self.error("unexpected character");
        };
        let numeric = first.is_ascii_digit()
            || ((first == b'-' || first == b'+')
                && token.as_bytes().get(1).is_some_and(u8::is_ascii_digit));
        if numeric {
            let digits = token.strip_suffix('N').unwrap_or(token);
            return match digits.parse::<i64>() {
                Ok(n) => Ok(Edn::Int(n)),
                Err(_) => self.error(format!("`{token}` is not an integer this reader supports")),
            };
        }
        Ok(Edn::Symbol(token.to_string()))
    }
}

fn opening(close: u8) -> char {
    match close {
        b']' => '[',
        b')' => '(',
        _ => '{',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_knossos_map_with_comments_when_read_then_values_and_lines_are_kept() {
        let text = "; a comment\n[{:process 3, :type :ok,\n :value [1 -2] :error \"x \\\"y\\\"\"}\n {:f nil}]";
        let nodes = parse_all(text, 1).unwrap();
        assert_eq!(nodes.len(), 1);
        let items = nodes[0].items().unwrap();
        assert_eq!(items[0].line, 2);
        assert_eq!(items[1].line, 4);
        assert_eq!(items[0].get("process").unwrap().value, Edn::Int(3));
        assert_eq!(items[0].get("type").unwrap().keyword(), Some("ok"));
        let value = items[0].get("value").unwrap().items().unwrap();
        assert_eq!(value[1].value, Edn::Int(-2));
        assert_eq!(
            items[0].get("error").unwrap().value,
            Edn::Str("x \"y\"".into())
        );
        assert_eq!(items[1].get("f").unwrap().value, Edn::Nil);
    }

    #[test]
    fn given_an_unclosed_vector_when_read_then_the_error_names_its_line() {
        let error = parse_all("\n\n[{:a 1}\n", 1).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.message.contains("never closed"));
    }

    #[test]
    fn given_a_map_with_an_odd_number_of_forms_when_read_then_it_is_an_error() {
        assert!(parse_all("{:a}", 1).is_err());
    }

    #[test]
    fn given_hostile_nesting_when_read_then_it_is_an_error_not_a_stack_overflow() {
        let text = "[".repeat(10_000);
        let error = parse_all(&text, 1).unwrap_err();
        assert!(error.message.contains("nested deeper"));
    }

    #[test]
    fn given_a_float_when_read_then_it_is_an_error() {
        assert!(parse_all("1.5", 1).is_err());
    }
}
