//! A small, bounded XML reader for libvirt domain definitions.
//!
//! quick-xml turns the text into events; this module builds a little element tree from them and
//! refuses everything a domain definition never needs and an attacker would: a DOCTYPE (and with
//! it every entity declaration and external fetch), references other than XML's five predefined
//! entities and character references, non-UTF-8 encodings, more than one root, text outside the
//! root, deep nesting and element or attribute floods. Input size is bounded by the caller
//! ([`super::import::MAX_XML_BYTES`]), element count, attribute count and depth here, so memory stays a small
//! multiple of the input. Errors carry a line and column.

use std::fmt;

use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// Deeper than any libvirt schema goes (domain/devices/disk/source/... is under 10).
pub const MAX_DEPTH: usize = 64;
/// A domain with thousands of devices stays far below this; a flood of tiny elements does not.
pub const MAX_ELEMENTS: usize = 100_000;
/// Attributes in the whole document. Each costs a few dozen bytes of tree for a dozen of input,
/// so without its own budget a 10 MiB file of attributes would build a tree of well over 100 MiB.
pub const MAX_ATTRIBUTES: usize = 100_000;

/// One element: its local name, namespace, attributes (in document order) and text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub namespace: Option<String>,
    pub attrs: Vec<(String, String)>,
    /// The element's own text, concatenated (child elements' text is theirs).
    pub text: String,
    pub children: Vec<Element>,
    /// 1-based line of the start tag.
    pub line: usize,
}

impl Element {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child with this local name (any namespace).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The trimmed text, `None` when empty.
    pub fn text(&self) -> Option<&str> {
        Some(self.text.trim()).filter(|t| !t.is_empty())
    }
}

/// Why a document was refused, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XmlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Line numbers for increasing offsets, counted incrementally: recounting from the start for
/// every element would make a large document quadratic.
struct Lines<'t> {
    text: &'t [u8],
    offset: usize,
    line: usize,
}

impl Lines<'_> {
    fn at(&mut self, offset: u64) -> usize {
        let offset = pos(offset).min(self.text.len());
        if offset < self.offset {
            self.offset = 0;
            self.line = 1;
        }
        self.line += self.text[self.offset..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.offset = offset;
        self.line
    }
}

/// Parses a whole document into its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(text);
    reader.config_mut().check_end_names = true;
    let err_at = |offset: u64, message: String| {
        let (line, column) = line_col(text, usize::try_from(offset).unwrap_or(usize::MAX));
        XmlError {
            line,
            column,
            message,
        }
    };

    let mut lines = Lines {
        text: text.as_bytes(),
        offset: 0,
        line: 1,
    };
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut count = 0usize;
    let mut attributes = 0usize;
    loop {
        let start = reader.buffer_position();
        let (ns, event) = match reader.read_resolved_event() {
            Ok(x) => x,
            Err(e) => {
                return Err(err_at(
                    reader.error_position(),
                    format!("not well-formed XML: {e}"),
                ));
            }
        };
        let namespace = match ns {
            ResolveResult::Bound(n) => Some(n.as_ref().to_owned()),
            _ => None,
        };
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(err_at(
                    start,
                    "a second root element; a domain definition has exactly one <domain>"
                        .to_owned(),
                ));
            }
            Event::Start(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(err_at(
                        start,
                        format!(
                            "more than {MAX_ELEMENTS} elements; this is not a domain definition"
                        ),
                    ));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err_at(
                        start,
                        format!("elements nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let el = element(&e, namespace, lines.at(start), &mut attributes)
                    .map_err(|m| err_at(start, m))?;
                stack.push(el);
            }
            Event::Empty(e) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(err_at(
                        start,
                        format!(
                            "more than {MAX_ELEMENTS} elements; this is not a domain definition"
                        ),
                    ));
                }
                let el = element(&e, namespace, lines.at(start), &mut attributes)
                    .map_err(|m| err_at(start, m))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::End(_) => {
                let Some(done) = stack.pop() else {
                    return Err(err_at(
                        start,
                        "a closing tag without its opening tag".to_owned(),
                    ));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => {
                        return Err(err_at(
                            start,
                            format!(
                                "text outside the root element ('{}'); this is not an XML document",
                                shorten(content.trim())
                            ),
                        ));
                    }
                }
            }
            Event::CData(t) => match stack.last_mut() {
                Some(el) => el.text.push_str(&t.xml10_content()),
                None => {
                    return Err(err_at(start, "CDATA outside the root element".to_owned()));
                }
            },
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match predefined(&r) {
                        Some(s) => s.to_owned(),
                        None => {
                            return Err(err_at(
                                start,
                                format!(
                                    "reference to the entity &{}; refused: only XML's predefined \
                                     entities are allowed (entities are never expanded)",
                                    &*r
                                ),
                            ));
                        }
                    },
                    Err(e) => return Err(err_at(start, format!("bad character reference: {e}"))),
                };
                match stack.last_mut() {
                    Some(el) => el.text.push_str(&resolved),
                    None => {
                        return Err(err_at(
                            start,
                            "a reference outside the root element".to_owned(),
                        ));
                    }
                }
            }
            Event::DocType(_) => {
                return Err(err_at(
                    start,
                    "a DOCTYPE declaration is refused: it can declare entities (expansion bombs, \
                     external files); libvirt never writes one"
                        .to_owned(),
                ));
            }
            Event::Decl(d) => {
                if let Some(enc) = d.encoding() {
                    let enc =
                        enc.map_err(|e| err_at(start, format!("bad XML declaration: {e}")))?;
                    let enc = enc.to_ascii_lowercase();
                    if enc != "utf-8" && enc != "utf8" {
                        return Err(err_at(
                            start,
                            format!(
                                "encoding '{enc}' is not supported; libvirt writes UTF-8 (convert \
                                 the file with iconv)"
                            ),
                        ));
                    }
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(err_at(
            text.len() as u64,
            format!(
                "the document ends inside <{}> (opened at line {}): the file is truncated",
                open.name, open.line
            ),
        ));
    }
    root.ok_or_else(|| {
        err_at(
            text.len() as u64,
            "no root element: the file has no XML in it".to_owned(),
        )
    })
}

fn pos(offset: u64) -> usize {
    usize::try_from(offset).unwrap_or(usize::MAX)
}

fn predefined(name: &str) -> Option<&'static str> {
    Some(match name {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => return None,
    })
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

fn element(
    e: &BytesStart<'_>,
    namespace: Option<String>,
    line: usize,
    attributes: &mut usize,
) -> Result<Element, String> {
    let name = e.local_name().as_ref().to_owned();
    let mut attrs = Vec::new();
    for attr in e.attributes() {
        *attributes += 1;
        if *attributes > MAX_ATTRIBUTES {
            return Err(format!(
                "more than {MAX_ATTRIBUTES} attributes; this is not a domain definition"
            ));
        }
        let attr = attr.map_err(|err| format!("bad attribute in <{name}>: {err}"))?;
        let key = attr.key.as_ref().to_owned();
        let value = attr
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|err| {
                format!("attribute {key} of <{name}>: {err} (entities are never expanded)")
            })?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        namespace,
        attrs,
        text: String::new(),
        children: Vec::new(),
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_small_tree_with_namespaces_and_references() {
        let doc = parse(
            "<?xml version='1.0' encoding='UTF-8'?>\n<!-- c -->\n<domain type='kvm'>\n  <name>a &amp; b&#x21;</name>\n  <metadata><l:x xmlns:l='urn:x' id='1'/></metadata>\n</domain>\n",
        )
        .expect("valid");
        assert_eq!(doc.name, "domain");
        assert_eq!(doc.attr("type"), Some("kvm"));
        assert_eq!(doc.child("name").and_then(Element::text), Some("a & b!"));
        let x = &doc.child("metadata").expect("metadata").children[0];
        assert_eq!(
            (x.name.as_str(), x.namespace.as_deref()),
            ("x", Some("urn:x"))
        );
        assert_eq!(x.line, 5);
    }

    #[test]
    fn refuses_doctype_and_unknown_entities() {
        let bomb = "<?xml version='1.0'?>\n<!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]>\n<domain>&b;</domain>";
        let e = parse(bomb).expect_err("refused");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("DOCTYPE"), "{e}");
        let e = parse("<domain><name>&ext;</name></domain>").expect_err("refused");
        assert!(e.message.contains("&ext;"), "{e}");
        let e = parse("<domain a='&ext;'/>").expect_err("refused");
        assert!(e.message.contains("entities are never expanded"), "{e}");
    }

    #[test]
    fn truncated_and_non_xml_inputs_say_where() {
        let e = parse("<domain>\n  <devices>\n    <disk>").expect_err("truncated");
        assert!(e.message.contains("ends inside <disk>"), "{e}");
        let e = parse("{\"manifest_version\": \"1.0\"}").expect_err("json");
        assert!(e.message.contains("text outside the root"), "{e}");
        let e = parse("").expect_err("empty");
        assert!(e.message.contains("no root element"), "{e}");
        let e = parse("<domain></devices>").expect_err("mismatch");
        assert!(e.message.contains("not well-formed"), "{e}");
        let e = parse("<domain/><domain/>").expect_err("two roots");
        assert!(e.message.contains("second root"), "{e}");
        let e = parse("<?xml version='1.0' encoding='ISO-8859-1'?><domain/>").expect_err("latin1");
        assert!(e.message.contains("iso-8859-1"), "{e}");
    }

    #[test]
    fn bounds_depth_and_element_count() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(
            parse(&deep)
                .expect_err("deep")
                .message
                .contains("nested deeper")
        );
        let flood = format!("<domain>{}</domain>", "<x/>".repeat(MAX_ELEMENTS + 1));
        assert!(
            parse(&flood)
                .expect_err("flood")
                .message
                .contains("more than")
        );
        // One element carrying the whole budget and one more, and the same spread over many.
        let wide: String = (0..=MAX_ATTRIBUTES).map(|i| format!(" a{i}='1'")).collect();
        let wide = format!("<domain{wide}/>");
        let spread: String = (0..=MAX_ATTRIBUTES / 4)
            .map(|i| format!("<x a='{i}' b='1' c='1' d='1'/>"))
            .collect();
        let spread = format!("<domain>{spread}</domain>");
        for doc in [wide, spread] {
            let e = parse(&doc).expect_err("attribute flood");
            assert!(
                e.message
                    .contains(&format!("more than {MAX_ATTRIBUTES} attributes")),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn positions_are_lines_and_columns() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
