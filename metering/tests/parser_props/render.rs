//! JSON text from a small tree, with varied whitespace and escapes: the same document written
//! many ways.

use proptest::prelude::*;

#[derive(Clone, Debug)]
pub(crate) enum Node {
    Obj(Vec<(&'static str, Node)>),
    Arr(Vec<Node>),
    Str(String),
    Int(u64),
    Raw(&'static str),
}

#[derive(Clone, Debug)]
pub(crate) struct Style {
    /// Indexes into the whitespace table, used in turn.
    spaces: Vec<u8>,
    /// Write non-ASCII characters as `\u` escapes (surrogate pairs above the BMP).
    escape_unicode: bool,
}

pub(crate) fn style(
    spaces: &'static [&'static str],
) -> impl Strategy<Value = (Style, &'static [&'static str])> {
    (prop::collection::vec(any::<u8>(), 1..8), any::<bool>()).prop_map(move |(spaces_at, escape_unicode)| {
        (
            Style {
                spaces: spaces_at,
                escape_unicode,
            },
            spaces,
        )
    })
}

pub(crate) const JSON_SPACE: &[&str] = &["", "", " ", "\n", "\t", "\r\n  "];
/// Inside SSE data a raw CR would end the line; LF becomes a new `data:` line.
pub(crate) const SSE_SPACE: &[&str] = &["", "", " ", "\n", "\t"];

struct Writer<'a> {
    out: String,
    style: &'a Style,
    table: &'a [&'a str],
    turn: usize,
}

impl Writer<'_> {
    fn space(&mut self) {
        let pick = self.style.spaces[self.turn % self.style.spaces.len()];
        self.turn += 1;
        self.out
            .push_str(self.table[usize::from(pick) % self.table.len()]);
    }

    fn string(&mut self, s: &str) {
        self.out.push('"');
        for c in s.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c if (c as u32) < 0x20 => self.out.push_str(&format!("\\u{:04x}", c as u32)),
                c if self.style.escape_unicode && !c.is_ascii() => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        self.out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
    }

    fn node(&mut self, node: &Node) {
        self.space();
        match node {
            Node::Obj(members) => {
                self.out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.space();
                    self.string(key);
                    self.space();
                    self.out.push(':');
                    self.node(value);
                }
                self.space();
                self.out.push('}');
            }
            Node::Arr(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.node(item);
                }
                self.space();
                self.out.push(']');
            }
            Node::Str(s) => self.string(s),
            Node::Int(n) => self.out.push_str(&n.to_string()),
            Node::Raw(raw) => self.out.push_str(raw),
        }
        self.space();
    }
}

pub(crate) fn render(node: &Node, (style, table): &(Style, &'static [&'static str])) -> String {
    let mut w = Writer {
        out: String::new(),
        style,
        table,
        turn: 0,
    };
    w.node(node);
    w.out
}
