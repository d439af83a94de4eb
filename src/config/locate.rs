//! Where a key sits in the config text, so that errors found after parsing
//! (a bad schedule, an unknown rule code, a duplicate name) name its line:
//! the config is read again with `toml_edit`, which keeps the span of every
//! key and value.

use toml_edit::{ImDocument, Item, Table, Value};

/// One step of a path into the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(&'a str),
    /// An element of an array of tables (`[[tenant]]`) or of an array.
    Index(usize),
}

/// `[Key("tenant"), Index(1), Key("schedule")]` → `tenant[1].schedule`.
pub fn display(path: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

pub struct Locator<'t> {
    text: &'t str,
    doc: Option<ImDocument<&'t str>>,
}

#[derive(Clone, Copy)]
enum At<'d> {
    Item(&'d Item),
    Table(&'d Table),
    Value(&'d Value),
}

impl<'t> Locator<'t> {
    pub fn new(text: &'t str) -> Locator<'t> {
        Locator {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// The 1-based line of the deepest part of `path` found in the text
    /// (the key itself when it is written; its table otherwise).
    pub fn line(&self, path: &[Seg<'_>]) -> usize {
        let Some(doc) = &self.doc else { return 1 };
        let mut at = At::Table(doc.as_table());
        let mut best: Option<usize> = None;
        for seg in path {
            let next = match (at, seg) {
                (At::Item(Item::Table(t)) | At::Table(t), Seg::Key(k)) => {
                    t.get_key_value(k).map(|(key, item)| {
                        best = key.span().map(|s| s.start).or(best);
                        At::Item(item)
                    })
                }
                (
                    At::Item(Item::Value(Value::InlineTable(t))) | At::Value(Value::InlineTable(t)),
                    Seg::Key(k),
                ) => t.get_key_value(k).map(|(key, item)| {
                    best = key.span().map(|s| s.start).or(best);
                    At::Item(item)
                }),
                (At::Item(Item::ArrayOfTables(a)), Seg::Index(i)) => a.get(*i).map(|t| {
                    best = t.span().map(|s| s.start).or(best);
                    At::Table(t)
                }),
                (
                    At::Item(Item::Value(Value::Array(a))) | At::Value(Value::Array(a)),
                    Seg::Index(i),
                ) => a.get(*i).map(|v| {
                    best = v.span().map(|s| s.start).or(best);
                    At::Value(v)
                }),
                _ => None,
            };
            match next {
                Some(n) => at = n,
                None => break,
            }
        }
        best.map(|b| self.text[..b].matches('\n').count() + 1)
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_in_arrays_of_tables_and_inline_tables() {
        let text = "[sip]\nlisten = [\"a\", \"b\"]\n\n[[tenant]]\nid = \"a\"\n\n[[tenant]]\nid = \"b\"\nschedule = { mon = [\"x\"] }\n\n[rule_set.eu]\nbase = \"fr\"\nhours = { quiet_hours = \"00:00-00:00\" }\n";
        let l = Locator::new(text);
        assert_eq!(
            l.line(&[Seg::Key("sip"), Seg::Key("listen"), Seg::Index(1)]),
            2
        );
        assert_eq!(
            l.line(&[Seg::Key("tenant"), Seg::Index(1), Seg::Key("id")]),
            8
        );
        assert_eq!(
            l.line(&[
                Seg::Key("tenant"),
                Seg::Index(1),
                Seg::Key("schedule"),
                Seg::Key("mon")
            ]),
            9
        );
        assert_eq!(l.line(&[Seg::Key("tenant"), Seg::Index(0)]), 4);
        assert_eq!(
            l.line(&[
                Seg::Key("rule_set"),
                Seg::Key("eu"),
                Seg::Key("hours"),
                Seg::Key("quiet_hours")
            ]),
            13
        );
        // A key that is not written points at its table.
        assert_eq!(
            l.line(&[Seg::Key("tenant"), Seg::Index(0), Seg::Key("schedule")]),
            4
        );
        assert_eq!(
            display(&[Seg::Key("tenant"), Seg::Index(1), Seg::Key("id")]),
            "tenant[1].id"
        );
    }
}
