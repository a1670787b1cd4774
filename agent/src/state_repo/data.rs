//! Group and host data: parsing with positions, and the deep merge all -> groups -> host.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use toml::Spanned;

use crate::diag::{Diagnostic, LineIndex};

/// Where a data value was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A data value with the source of every leaf (arrays are leaves, as they merge whole).
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Table(BTreeMap<String, Node>, Source),
    Leaf(Value, Source),
}

/// One parsed data file: its top-level table.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub file: String,
    pub root: BTreeMap<String, Node>,
}

/// Parses a `group_data/` or `host_data/` file.
pub fn parse(file: &str, text: &str) -> Result<DataFile, Diagnostic> {
    let tree: Spanned<Tree> =
        toml::from_str(text).map_err(|e| super::toml_file::toml_error(file, text, &e))?;
    let index = LineIndex::new(text);
    let root = match to_node(tree, file, &index) {
        Node::Table(map, _) => map,
        Node::Leaf(..) => BTreeMap::new(),
    };
    Ok(DataFile {
        file: file.to_owned(),
        root,
    })
}

/// Merges layers in order: later layers win; tables merge key by key, everything else
/// (arrays included) is replaced whole.
#[must_use]
pub fn merge<'a>(layers: impl IntoIterator<Item = &'a DataFile>) -> Merged {
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    for layer in layers {
        merge_into(&mut root, &layer.root);
    }
    Merged { root }
}

fn merge_into(acc: &mut BTreeMap<String, Node>, layer: &BTreeMap<String, Node>) {
    for (key, node) in layer {
        match (acc.get_mut(key), node) {
            (Some(Node::Table(acc_map, acc_src)), Node::Table(map, src)) => {
                merge_into(acc_map, map);
                *acc_src = src.clone();
            }
            _ => {
                acc.insert(key.clone(), node.clone());
            }
        }
    }
}

/// The merged data of one host.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub root: BTreeMap<String, Node>,
}

impl Merged {
    /// The data as a JSON object, the shape templates see under `data`.
    #[must_use]
    pub fn to_json(&self) -> Value {
        fn conv(map: &BTreeMap<String, Node>) -> Value {
            Value::Object(
                map.iter()
                    .map(|(k, n)| {
                        let v = match n {
                            Node::Table(m, _) => conv(m),
                            Node::Leaf(v, _) => v.clone(),
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            )
        }
        conv(&self.root)
    }

    /// Every leaf as `(dotted path, value, source)`, sorted by path. Empty tables are leaves.
    #[must_use]
    pub fn leaves(&self) -> Vec<(String, Value, Source)> {
        fn walk(
            prefix: &str,
            map: &BTreeMap<String, Node>,
            out: &mut Vec<(String, Value, Source)>,
        ) {
            for (k, n) in map {
                let path = if prefix.is_empty() {
                    path_segment(k)
                } else {
                    format!("{prefix}.{}", path_segment(k))
                };
                match n {
                    Node::Table(m, src) if m.is_empty() => {
                        out.push((path, Value::Object(serde_json::Map::new()), src.clone()));
                    }
                    Node::Table(m, _) => walk(&path, m, out),
                    Node::Leaf(v, src) => out.push((path, v.clone(), src.clone())),
                }
            }
        }
        let mut out = Vec::new();
        walk("", &self.root, &mut out);
        out
    }
}

/// A key as written in a dotted path: bare when it can be, quoted otherwise.
fn path_segment(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// Looks up a dotted data path (`a.b.0`) in a JSON value.
#[must_use]
pub fn lookup<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, seg| match v {
        Value::Object(map) => map.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// A TOML value as parsed, with the span of every nested value.
enum Tree {
    Table(Vec<(String, Spanned<Tree>)>),
    Array(Vec<Spanned<Tree>>),
    Scalar(Value),
}

const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Tree, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Tree::Scalar(Value::Number(n)))
            .ok_or_else(|| E::custom("nan and inf are not supported in data"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Scalar(Value::String(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Tree>>()? {
            items.push(item);
        }
        Ok(Tree::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == DATETIME_KEY {
                return Err(de::Error::custom(
                    "dates and times are not supported in data: write the value as a quoted string",
                ));
            }
            let value = map.next_value::<Spanned<Tree>>()?;
            entries.push((key, value));
        }
        Ok(Tree::Table(entries))
    }
}

fn to_node(tree: Spanned<Tree>, file: &str, index: &LineIndex<'_>) -> Node {
    let source = Source {
        file: file.to_owned(),
        line: index.pos(tree.span().start).line,
    };
    match tree.into_inner() {
        Tree::Table(entries) => Node::Table(
            entries
                .into_iter()
                .map(|(k, v)| (k, to_node(v, file, index)))
                .collect(),
            source,
        ),
        Tree::Array(items) => Node::Leaf(
            Value::Array(items.into_iter().map(|i| to_json(i.into_inner())).collect()),
            source,
        ),
        Tree::Scalar(v) => Node::Leaf(v, source),
    }
}

fn to_json(tree: Tree) -> Value {
    match tree {
        Tree::Table(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| (k, to_json(v.into_inner())))
                .collect(),
        ),
        Tree::Array(items) => {
            Value::Array(items.into_iter().map(|i| to_json(i.into_inner())).collect())
        }
        Tree::Scalar(v) => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn file(name: &str, text: &str) -> DataFile {
        parse(name, text).unwrap()
    }

    #[test]
    fn tables_merge_deeply_arrays_and_scalars_are_replaced() {
        let all = file(
            "group_data/all.toml",
            "[admin]\nuser = \"alice\"\nshell = \"bash\"\nkeys = [\"a\", \"b\"]\n",
        );
        let media = file(
            "group_data/media.toml",
            "[admin]\nshell = \"zsh\"\nkeys = [\"c\"]\n",
        );
        let host = file(
            "host_data/media-01.toml",
            "admin = { user = \"bob\" }\nport = 8080\n",
        );
        let merged = merge([&all, &media, &host]);
        assert_eq!(
            merged.to_json(),
            json!({"admin": {"user": "bob", "shell": "zsh", "keys": ["c"]}, "port": 8080})
        );
        let leaves = merged.leaves();
        let src = |p: &str| leaves.iter().find(|l| l.0 == p).unwrap().2.to_string();
        assert_eq!(src("admin.user"), "host_data/media-01.toml:1");
        assert_eq!(src("admin.shell"), "group_data/media.toml:2");
        assert_eq!(src("admin.keys"), "group_data/media.toml:3");
        assert_eq!(src("port"), "host_data/media-01.toml:2");
    }

    #[test]
    fn datetimes_are_refused_with_a_hint() {
        let d = parse("group_data/all.toml", "a = 1\nwhen = 2024-01-01\n").unwrap_err();
        assert!(d.message.contains("dates and times"), "{d}");
        assert_eq!(d.line, Some(2));
    }

    #[test]
    fn lookup_walks_tables_and_arrays() {
        let v = json!({"a": {"b": [10, {"c": true}]}});
        assert_eq!(lookup(&v, "a.b.1.c"), Some(&json!(true)));
        assert_eq!(lookup(&v, "a.x"), None);
    }

    /// A data layer generated for the property test: nested tables of a few keys.
    fn layer() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i8>().prop_map(|i| json!(i)),
            proptest::collection::vec(any::<i8>(), 0..3).prop_map(|v| json!(v)),
        ];
        let node = leaf.prop_recursive(3, 24, 3, |inner| {
            proptest::collection::btree_map("[abc]", inner, 1..3)
                .prop_map(|m| Value::Object(m.into_iter().collect()))
        });
        proptest::collection::btree_map("[abc]", node, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&p, v, out);
                }
            }
            _ => out.push((prefix.to_owned(), v.clone())),
        }
    }

    proptest! {
        /// The documented precedence, stated independently of the merge code: walking the
        /// layers in order, each leaf a layer writes replaces whatever was at its path, at a
        /// parent of it (a scalar becomes a table) or below it (a table becomes a scalar).
        #[test]
        fn merge_follows_documented_precedence(layers in proptest::collection::vec(layer(), 1..5)) {
            let files: Vec<DataFile> = layers
                .iter()
                .enumerate()
                .map(|(i, v)| file(&format!("layer{i}.toml"), &toml::to_string(v).unwrap()))
                .collect();
            let merged = merge(&files);

            let mut expected: Vec<(String, Value, String)> = Vec::new();
            for (i, layer) in layers.iter().enumerate() {
                let mut leaves = Vec::new();
                flatten("", layer, &mut leaves);
                for (path, value) in leaves {
                    expected.retain(|(p, _, _)| {
                        !(p == &path
                            || p.starts_with(&format!("{path}."))
                            || path.starts_with(&format!("{p}.")))
                    });
                    expected.push((path, value, format!("layer{i}.toml")));
                }
            }
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            let actual: Vec<(String, Value, String)> = merged
                .leaves()
                .into_iter()
                .map(|(p, v, s)| (p, v, s.file))
                .collect();
            prop_assert_eq!(actual, expected);
        }
    }
}
