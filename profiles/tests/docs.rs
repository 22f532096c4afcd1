//! `docs/profiles.md` keeps up with `src/schema.rs`: every struct has a section whose
//! table lists exactly its fields, every enum variant and variant field is mentioned, and
//! the example profiles in the page load.

use std::path::Path;

/// A struct or enum of the schema, read from its source text.
#[derive(Debug, Default)]
struct Item {
    name: String,
    is_enum: bool,
    /// `pub <name>:` lines of a struct, or the fields of an enum's struct variants.
    fields: Vec<String>,
    variants: Vec<String>,
}

/// Read the braced `pub struct`/`pub enum` items of `schema.rs` (tuple structs skipped).
fn schema_items(src: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut cur: Option<Item> = None;
    for line in src.lines() {
        if let Some(it) = cur.as_mut() {
            if line == "}" {
                items.push(cur.take().unwrap());
                continue;
            }
            let t = line.trim_start();
            let indent = line.len() - t.len();
            if t.starts_with("//") || t.starts_with('#') || t.is_empty() {
                continue;
            }
            let is_pub = t.starts_with("pub ");
            let body = t.strip_prefix("pub ").unwrap_or(t);
            let ident: String = body
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let is_field = !ident.is_empty() && body[ident.len()..].starts_with(':');
            if it.is_enum && indent == 4 && !ident.is_empty() {
                it.variants.push(ident);
            } else if is_field
                && (is_pub || (it.is_enum && indent == 8))
                && !it.fields.contains(&ident)
            {
                it.fields.push(ident);
            }
            continue;
        }
        for (kw, is_enum) in [("pub struct ", false), ("pub enum ", true)] {
            if let Some(rest) = line.strip_prefix(kw) {
                if let Some(name) = rest.strip_suffix(" {") {
                    cur = Some(Item {
                        name: name.to_string(),
                        is_enum,
                        ..Item::default()
                    });
                }
            }
        }
    }
    items
}

/// The text under the heading that names `(Name)`, up to the next heading.
fn section<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let tag = format!("({name})");
    let start = doc
        .lines()
        .position(|l| l.starts_with('#') && l.contains(&tag))?;
    let lines: Vec<&str> = doc.lines().collect();
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with('#'))
        .map_or(lines.len(), |i| start + 1 + i);
    let first = lines[start].as_ptr() as usize - doc.as_ptr() as usize;
    let last = if end < lines.len() {
        lines[end].as_ptr() as usize - doc.as_ptr() as usize
    } else {
        doc.len()
    };
    Some(&doc[first..last])
}

/// Field names in the first column of a section's table: `` | `name` | ``.
fn table_fields(section: &str) -> Vec<String> {
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` |").map(|(n, _)| n.to_string()))
        .filter(|n| n.chars().all(|c| c.is_alphanumeric() || c == '_'))
        .collect()
}

fn read(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_schema_reader_sees_the_schema() {
    let items = schema_items(&read("src/schema.rs"));
    let profile = items.iter().find(|i| i.name == "Profile").unwrap();
    assert_eq!(
        profile.fields,
        [
            "name",
            "description",
            "host",
            "guest",
            "can",
            "requirements"
        ]
    );
    let metric = items.iter().find(|i| i.name == "Metric").unwrap();
    assert!(metric.is_enum);
    assert!(metric.variants.contains(&"WcrtSlack".to_string()));
    assert!(metric.fields.contains(&"percentile".to_string()));
    assert!(items.len() >= 20, "{} items", items.len());
}

#[test]
fn every_schema_field_is_documented() {
    let doc = read("../docs/profiles.md");
    let mut missing = Vec::new();
    for item in schema_items(&read("src/schema.rs")) {
        if item.is_enum {
            let text = section(&doc, &item.name).unwrap_or(&doc);
            for v in &item.variants {
                if !doc.contains(&format!("`{v}")) {
                    missing.push(format!("{}::{v} (variant)", item.name));
                }
            }
            for f in &item.fields {
                if !text.contains(&format!("`{f}`")) {
                    missing.push(format!("{}: field {f}", item.name));
                }
            }
            continue;
        }
        let Some(text) = section(&doc, &item.name) else {
            missing.push(format!(
                "{}: no section with ({}) in its heading",
                item.name, item.name
            ));
            continue;
        };
        let documented = table_fields(text);
        for f in &item.fields {
            if !documented.contains(f) {
                missing.push(format!("{}.{f}", item.name));
            }
        }
        for d in &documented {
            if !item.fields.contains(d) {
                missing.push(format!(
                    "{}.{d} is documented but not in the schema",
                    item.name
                ));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/profiles.md is behind src/schema.rs:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_examples_in_the_page_load() {
    let doc = read("../docs/profiles.md");
    let mut blocks = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in doc.lines() {
        match cur.as_mut() {
            Some(b) if line.starts_with("    ") || line.is_empty() => b.push(line),
            Some(_) => blocks.push(cur.take().unwrap().join("\n")),
            None if line.starts_with("    Profile(") => cur = Some(vec![line]),
            None => {}
        }
    }
    if let Some(b) = cur {
        blocks.push(b.join("\n"));
    }
    assert!(blocks.len() >= 2, "found {} example profiles", blocks.len());
    for (i, b) in blocks.iter().enumerate() {
        let p = profiles::parse(b, &format!("docs example {i}")).unwrap_or_else(|e| panic!("{e}"));
        profiles::validate(&p).unwrap_or_else(|e| panic!("docs example {i}: {e:?}"));
    }
}
