//! Request parameters as PHP sees them (bitrix24-rest.md §1.2): one ordered tree built from the
//! query string, a form body (`a[b][0]=x` bracket nesting, `a[]=x` appends), a multipart body or a
//! JSON body, merged shallowly (body keys win, like `$_REQUEST`).
//!
//! The tree keeps key order (serde_json's map here does not), because order matters: `batch`
//! executes `cmd` in the order given and `USER_ID[0..n]` lists are recorded in order.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

/// A PHP request value: scalars from forms are always strings; JSON bodies keep their types.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Param {
    #[default]
    Null,
    Bool(bool),
    Num(Number),
    Str(String),
    List(Vec<Self>),
    Map(Vec<(String, Self)>),
}

impl Param {
    /// An empty map (what an empty query string parses to).
    pub fn map() -> Self {
        Self::Map(Vec::new())
    }

    /// The child under `key` (maps: exact key; lists: numeric index).
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Map(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            Self::List(l) => key.parse::<usize>().ok().and_then(|i| l.get(i)),
            _ => None,
        }
    }

    /// The first key present among several spellings (`id`/`ID`/`Id`, `fields`/`FIELDS`).
    pub fn get_any(&self, keys: &[&str]) -> Option<&Self> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// Removes and returns a top-level key.
    pub fn remove(&mut self, key: &str) -> Option<Self> {
        let Self::Map(m) = self else { return None };
        let i = m.iter().position(|(k, _)| k == key)?;
        Some(m.remove(i).1)
    }

    /// Sets a top-level key (replacing it in place, or appending).
    pub fn set(&mut self, key: &str, value: Self) {
        if !matches!(self, Self::Map(_)) {
            *self = Self::map();
        }
        let Self::Map(m) = self else { unreachable!() };
        match m.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => m.push((key.to_owned(), value)),
        }
    }

    /// The scalar as PHP would cast it to a string (`true` → "1", `false` → ""); None for
    /// null and arrays.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Str(s) => Some(s.clone()),
            Self::Num(n) => Some(n.to_string()),
            Self::Bool(b) => Some(if *b { "1".into() } else { String::new() }),
            _ => None,
        }
    }

    /// A non-empty trimmed string value.
    pub fn nonempty(&self) -> Option<String> {
        self.text()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    /// An unsigned integer from a number or a numeric string.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Num(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            }),
            Self::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A signed integer from a number or a numeric string.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Num(n) => n.as_i64(),
            Self::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A boolean the way Bitrix reads flags: `1/0`, `Y/N`, `true/false`.
    pub fn flag(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            Self::Num(n) => n.as_f64().map(|f| f != 0.0),
            Self::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "1" | "y" | "true" => Some(true),
                "0" | "n" | "false" | "" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// True for a JSON/PHP string (what `CALL_ID` must be).
    pub fn is_str(&self) -> bool {
        matches!(self, Self::Str(_))
    }

    /// True for an array (list or map).
    pub fn is_array(&self) -> bool {
        matches!(self, Self::List(_) | Self::Map(_))
    }

    /// The elements of an array in order; a scalar is a one-element list; null is empty.
    pub fn items(&self) -> Vec<&Self> {
        match self {
            Self::List(l) => l.iter().collect(),
            Self::Map(m) => m.iter().map(|(_, v)| v).collect(),
            Self::Null => Vec::new(),
            other => vec![other],
        }
    }

    /// Key/value pairs of an array in order (lists are keyed "0".."n-1").
    pub fn entries(&self) -> Vec<(String, &Self)> {
        match self {
            Self::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            Self::Map(m) => m.iter().map(|(k, v)| (k.clone(), v)).collect(),
            _ => Vec::new(),
        }
    }

    /// JSON as PHP's `json_encode` would print it: maps keyed 0..n-1 become arrays.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Num(n) => Value::Number(n.clone()),
            Self::Str(s) => Value::String(s.clone()),
            Self::List(l) => Value::Array(l.iter().map(Self::to_json).collect()),
            Self::Map(m) if is_sequential(m.iter().map(|(k, _)| k.as_str())) => {
                Value::Array(m.iter().map(|(_, v)| v.to_json()).collect())
            }
            Self::Map(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// The tree for a JSON value (object key order is serde_json's).
    pub fn from_json(v: &Value) -> Self {
        match v {
            Value::Null => Self::Null,
            Value::Bool(b) => Self::Bool(*b),
            Value::Number(n) => Self::Num(n.clone()),
            Value::String(s) => Self::Str(s.clone()),
            Value::Array(a) => Self::List(a.iter().map(Self::from_json).collect()),
            Value::Object(o) => Self::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Calls `f` on every scalar leaf (used for batch `$result[..]` substitution).
    pub fn for_each_leaf_mut(&mut self, f: &mut impl FnMut(&mut Self)) {
        match self {
            Self::List(l) => l.iter_mut().for_each(|v| v.for_each_leaf_mut(f)),
            Self::Map(m) => m.iter_mut().for_each(|(_, v)| v.for_each_leaf_mut(f)),
            leaf => f(leaf),
        }
    }
}

/// True when the keys are exactly "0", "1", … in order (a PHP list).
pub fn is_sequential<'a>(keys: impl Iterator<Item = &'a str>) -> bool {
    let mut n = 0usize;
    for k in keys {
        if k != n.to_string() {
            return false;
        }
        n += 1;
    }
    n > 0
}

/// A query string or form body with PHP bracket nesting. Values are URL-decoded once.
pub fn parse_form(s: &str) -> Param {
    let mut root = Param::map();
    for (k, v) in url::form_urlencoded::parse(s.as_bytes()) {
        let segs = split_php_key(&k);
        if !segs.is_empty() {
            insert_php(&mut root, &segs, Param::Str(v.into_owned()));
        }
    }
    root
}

/// `a[b][]` → `[Some("a"), Some("b"), None]` (None = append). An empty base is ignored, as PHP does.
fn split_php_key(key: &str) -> Vec<Option<String>> {
    let Some(open) = key.find('[') else {
        return if key.is_empty() {
            vec![]
        } else {
            vec![Some(key.to_owned())]
        };
    };
    if open == 0 {
        return vec![];
    }
    let mut segs = vec![Some(key[..open].to_owned())];
    let mut rest = &key[open..];
    while let Some(stripped) = rest.strip_prefix('[') {
        let Some(close) = stripped.find(']') else {
            break;
        };
        let seg = &stripped[..close];
        segs.push(if seg.is_empty() {
            None
        } else {
            Some(seg.to_owned())
        });
        rest = &stripped[close + 1..];
    }
    segs
}

fn insert_php(node: &mut Param, segs: &[Option<String>], value: Param) {
    if !matches!(node, Param::Map(_)) {
        *node = Param::map();
    }
    let Param::Map(m) = node else { unreachable!() };
    let key = match &segs[0] {
        Some(k) => k.clone(),
        None => m
            .iter()
            .filter_map(|(k, _)| k.parse::<u64>().ok())
            .max()
            .map_or(0, |n| n + 1)
            .to_string(),
    };
    let pos = match m.iter().position(|(k, _)| *k == key) {
        Some(p) => p,
        None => {
            m.push((key, Param::Null));
            m.len() - 1
        }
    };
    if segs.len() == 1 {
        m[pos].1 = value;
    } else {
        insert_php(&mut m[pos].1, &segs[1..], value);
    }
}

/// An order-preserving JSON body.
pub fn parse_json(body: &[u8]) -> Result<Param, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let p = Param::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(p)
}

impl<'de> Deserialize<'de> for Param {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamVisitor)
    }
}

struct ParamVisitor;

impl<'de> Visitor<'de> for ParamVisitor {
    type Value = Param;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Param, E> {
        Ok(Param::Null)
    }
    fn visit_none<E>(self) -> Result<Param, E> {
        Ok(Param::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Param, E> {
        Ok(Param::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Param, E> {
        Ok(Param::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Param, E> {
        Ok(Param::Num(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Param, E> {
        Ok(Number::from_f64(v).map_or(Param::Null, Param::Num))
    }
    fn visit_str<E>(self, v: &str) -> Result<Param, E> {
        Ok(Param::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Param, E> {
        Ok(Param::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Param, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Param::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Param, A::Error> {
        let mut out: Vec<(String, Param)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Param>()? {
            match out.iter_mut().find(|(ek, _)| *ek == k) {
                Some(slot) => slot.1 = v,
                None => out.push((k, v)),
            }
        }
        Ok(Param::Map(out))
    }
}

/// One part of a `multipart/form-data` body.
#[derive(Clone, Debug)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub data: Vec<u8>,
}

/// A minimal multipart parser (enough for curl/reqwest bodies): parts split on the boundary,
/// `Content-Disposition` name and filename.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Part>, String> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .map(|b| b.trim_matches('"').to_owned())
        .ok_or("multipart without a boundary")?;
    let delim = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut chunks = split_bytes(body, &delim).into_iter().skip(1);
    for chunk in chunks.by_ref() {
        if chunk.starts_with(b"--") {
            break;
        }
        let chunk = chunk.strip_prefix(b"\r\n").unwrap_or(chunk);
        let head_end = find_bytes(chunk, b"\r\n\r\n").ok_or("a part without headers")?;
        let head = String::from_utf8_lossy(&chunk[..head_end]).into_owned();
        let data = &chunk[head_end + 4..];
        let data = data.strip_suffix(b"\r\n").unwrap_or(data);
        let name = disposition_value(&head, "name").ok_or("a part without a name")?;
        parts.push(Part {
            name,
            filename: disposition_value(&head, "filename"),
            data: data.to_vec(),
        });
    }
    Ok(parts)
}

fn disposition_value(head: &str, key: &str) -> Option<String> {
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
    line.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split_bytes<'a>(hay: &'a [u8], delim: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = hay;
    while let Some(i) = find_bytes(rest, delim) {
        out.push(&rest[..i]);
        rest = &rest[i + delim.len()..];
    }
    out.push(rest);
    out
}

/// Multipart text fields as a PHP tree (file parts become their content as a lossy string).
pub fn multipart_params(parts: &[Part]) -> Param {
    let mut root = Param::map();
    for p in parts {
        let segs = split_php_key(&p.name);
        if !segs.is_empty() {
            insert_php(
                &mut root,
                &segs,
                Param::Str(String::from_utf8_lossy(&p.data).into_owned()),
            );
        }
    }
    root
}

/// Query string and body merged into one tree (body keys win). A JSON body that is not an
/// object, or malformed JSON, is an error.
pub fn request_params(
    query: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> Result<Param, String> {
    let mut params = parse_form(query.unwrap_or(""));
    let ct = content_type.to_ascii_lowercase();
    let from_body = if body.iter().all(u8::is_ascii_whitespace) {
        Param::map()
    } else if ct.starts_with("application/json") {
        match parse_json(body)? {
            p @ Param::Map(_) => p,
            _ => return Err("the JSON body must be an object".into()),
        }
    } else if ct.starts_with("multipart/form-data") {
        multipart_params(&parse_multipart(content_type, body)?)
    } else {
        parse_form(&String::from_utf8_lossy(body))
    };
    if let Param::Map(m) = from_body {
        for (k, v) in m {
            params.set(&k, v);
        }
    }
    Ok(params)
}
