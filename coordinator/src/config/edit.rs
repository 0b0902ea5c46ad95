//! `agent add`: adding or replacing one agent source in the config text while leaving the rest
//! of the file — comments, order, spacing — as the user wrote it.
//!
//! The edit is line-based, guided by the positioned YAML tree: an entry of a block mapping runs
//! from its key's line to the line before the next sibling key. Flow-style (`{...}`) sections
//! cannot be edited in place and are rewritten from the tree (their comments are lost).

use super::resolve::{
    validate_address, validate_fingerprint, validate_source_name, validate_ssh_destination,
};
use crate::yaml::{Node, Spanned};
use serde_json::{Map, Value};

/// What `agent add` writes for one agent; `None` fields keep what an existing entry has.
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentEntry<'a> {
    pub address: &'a str,
    pub fingerprint: &'a str,
    pub slots: Option<usize>,
    pub project_dir: Option<&'a str>,
    /// `process`, `slurm`, `pbs` or `auto` (checked by the caller).
    pub backend: Option<&'a str>,
    /// The interpreter on the agent's host.
    pub python: Option<&'a str>,
    /// The ssh destination `agent deploy` reached the host through.
    pub ssh: Option<&'a str>,
    /// The user's options for that ssh (`-F FILE`, `-o K=V`), so later commands reuse them.
    pub ssh_options: Option<&'a [String]>,
    /// Where the agent keeps task directories on its host (checked by the caller).
    pub work_dir: Option<&'a str>,
    /// `sync` written only when the entry has none of its own (a default, never an override).
    pub sync_default: Option<&'a str>,
    /// `transport`, likewise only when the entry has none of its own.
    pub transport_default: Option<&'a str>,
}

/// Returns `text` with `sources.<name>` set to an agent source. An existing agent entry of that
/// name keeps its other keys (backend, hpc, and slots/project_dir unless given); the `sources:`
/// section is appended when missing. The result is checked to read back.
pub fn set_agent_source(
    text: &str,
    name: &str,
    address: &str,
    fingerprint: &str,
    slots: Option<usize>,
    project_dir: Option<&str>,
) -> Result<String, String> {
    let entry = AgentEntry {
        address,
        fingerprint,
        slots,
        project_dir,
        ..AgentEntry::default()
    };
    set_agent_entry(text, name, &entry)
}

/// `set_agent_source` with every field `agent add` takes.
pub fn set_agent_entry(text: &str, name: &str, entry: &AgentEntry) -> Result<String, String> {
    let AgentEntry {
        address,
        fingerprint,
        slots,
        project_dir,
        backend,
        python,
        ssh,
        ssh_options,
        work_dir,
        sync_default,
        transport_default,
    } = *entry;
    validate_source_name(name)?;
    if name == "local" {
        return Err(
            "`local` is the built-in source for this machine; give the agent another name".into(),
        );
    }
    validate_address(address)?;
    validate_fingerprint(fingerprint)?;
    if slots == Some(0) {
        return Err("slots must be at least 1".into());
    }
    if project_dir.is_some_and(|dir| dir.trim().is_empty()) {
        return Err("the project directory is empty".into());
    }
    if python.is_some_and(|p| p.trim().is_empty()) {
        return Err("the python interpreter is empty".into());
    }
    if let Some(ssh) = ssh {
        validate_ssh_destination(ssh)?;
    }
    let root =
        crate::yaml::parse(text).map_err(|e| format!("the config is not valid YAML: {e}"))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let entry_for = |existing: Option<&Spanned>| {
        let mut fields = Map::new();
        fields.insert("type".into(), "agent".into());
        fields.insert("address".into(), address.trim().into());
        fields.insert("fingerprint".into(), fingerprint.trim().into());
        if let Some(slots) = slots {
            fields.insert("slots".into(), slots.into());
        }
        if let Some(dir) = project_dir {
            fields.insert("project_dir".into(), dir.trim().into());
        }
        if let Some(python) = python {
            fields.insert("python".into(), python.trim().into());
        }
        if let Some(backend) = backend {
            fields.insert("backend".into(), backend.trim().into());
        }
        if let Some(ssh) = ssh {
            fields.insert("ssh".into(), ssh.trim().into());
        }
        if let Some(dir) = work_dir {
            fields.insert("work_dir".into(), dir.trim().into());
        }
        if let Some(options) = ssh_options {
            fields.insert(
                "ssh_options".into(),
                Value::Array(options.iter().map(|o| o.as_str().into()).collect()),
            );
        }
        for (key, default) in [("sync", sync_default), ("transport", transport_default)] {
            if let Some(value) = default {
                if existing.and_then(|e| e.get(key)).is_none() {
                    fields.insert(key.into(), value.into());
                }
            }
        }
        // Re-adding an agent (say after a redeploy changed its identity) keeps what the user
        // set up for it; a non-agent entry of that name is replaced whole.
        let was_agent = existing.is_some_and(|e| {
            e.get("type")
                .and_then(Spanned::as_str)
                .is_none_or(|t| t == "agent")
        });
        // Its keys stay in the order written (a redeploy that changes nothing rewrites the
        // same text); new keys follow.
        if let (true, Some(Node::Map(entries))) = (was_agent, existing.map(|e| &e.node)) {
            let mut ordered = Map::new();
            for (key, value) in entries {
                let key = key.key_text();
                let value = fields.shift_remove(&key).unwrap_or_else(|| to_json(value));
                ordered.insert(key, value);
            }
            ordered.extend(std::mem::take(&mut fields));
            fields = ordered;
        }
        let mut one = Map::new();
        one.insert(name.to_string(), Value::Object(fields));
        Value::Object(one)
    };

    let result = match root {
        None => {
            let mut out = with_final_newline(text);
            out.push_str("sources:\n");
            out.push_str(&block(&entry_for(None), 2));
            out
        }
        Some(root) => {
            let Node::Map(top) = &root.node else {
                return Err("the config is not a mapping of sections".into());
            };
            if is_flow(&lines, &root) {
                let mut value = to_json(&root);
                let sources = value
                    .as_object_mut()
                    .and_then(|m| {
                        let slot = m.entry("sources").or_insert(Value::Object(Map::new()));
                        if slot.is_null() {
                            *slot = Value::Object(Map::new());
                        }
                        slot.as_object_mut()
                    })
                    .ok_or("`sources:` is not a mapping")?;
                let existing = root.get("sources").and_then(|s| s.get(name));
                if let Value::Object(entry) = entry_for(existing) {
                    sources.extend(entry);
                }
                crate::yaml::emit_json(&value)
            } else {
                edit_block(text, &lines, top, name, &entry_for)?
            }
        }
    };
    check_reads_back(&result, name, address, fingerprint)?;
    Ok(result)
}

/// Returns `text` without `sources.<name>`, the rest as written. `Err` when there is no such
/// entry or it is not an agent.
pub fn remove_agent_source(text: &str, name: &str) -> Result<String, String> {
    let root = crate::yaml::parse(text)
        .map_err(|e| format!("the config is not valid YAML: {e}"))?
        .ok_or_else(|| format!("no agent `{name}` in the config"))?;
    let Some(sources) = root.get("sources") else {
        return Err(format!("no agent `{name}` in the config"));
    };
    let Node::Map(entries) = &sources.node else {
        return Err(format!("no agent `{name}` in the config"));
    };
    let Some(at) = entries.iter().position(|(k, _)| k.as_str() == Some(name)) else {
        return Err(format!("no agent `{name}` in the config"));
    };
    let is_agent = entries[at]
        .1
        .get("type")
        .and_then(Spanned::as_str)
        .is_some_and(|t| t == "agent");
    if !is_agent {
        return Err(format!(
            "source `{name}` is not an agent; edit the config by hand"
        ));
    }
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let Node::Map(top) = &root.node else {
        return Err("the config is not a mapping of sections".into());
    };
    let section_index = top
        .iter()
        .position(|(k, _)| k.as_str() == Some("sources"))
        .unwrap_or(0);
    let section_end = top
        .get(section_index + 1)
        .map_or(lines.len(), |(next, _)| next.pos.line - 1);
    if is_flow(&lines, &root) || is_flow(&lines, sources) {
        // Flow style: rewrite the section (or the document) from the tree without the entry.
        let mut without = to_json(sources);
        if let Value::Object(map) = &mut without {
            map.shift_remove(name);
        }
        if is_flow(&lines, &root) {
            let mut value = to_json(&root);
            value["sources"] = without;
            return Ok(crate::yaml::emit_json(&value));
        }
        let key_line = top[section_index].0.pos.line;
        let end = trim_tail(&lines, key_line, section_end, 0);
        let replacement = format!(
            "sources:\n{}",
            indent_block(&crate::yaml::emit_json(&without), 2)
        );
        return Ok(splice(&lines, key_line, end, &replacement));
    }
    let indent = entries[0].0.pos.col - 1;
    let start = entries[at].0.pos.line;
    let next = entries
        .get(at + 1)
        .map_or(section_end, |(k, _)| k.pos.line - 1);
    let end = trim_tail(&lines, start, next, indent);
    Ok(splice(&lines, start, end, ""))
}

fn edit_block(
    text: &str,
    lines: &[&str],
    top: &[(Spanned, Spanned)],
    name: &str,
    entry_for: &dyn Fn(Option<&Spanned>) -> Value,
) -> Result<String, String> {
    let Some(index) = top.iter().position(|(k, _)| k.as_str() == Some("sources")) else {
        let mut out = with_final_newline(text);
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str("sources:\n");
        out.push_str(&block(&entry_for(None), 2));
        return Ok(out);
    };
    let (key, value) = &top[index];
    // The sources section ends before the next top-level key, or at the end of the file.
    let section_end = top
        .get(index + 1)
        .map_or(lines.len(), |(next, _)| next.pos.line - 1);
    match &value.node {
        Node::Null => {
            let key_line = key.pos.line;
            let line = lines.get(key_line - 1).copied().unwrap_or("");
            let after_colon = line.split_once(':').map_or("", |(_, rest)| rest).trim();
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            if !after_colon.is_empty() && !after_colon.starts_with('#') {
                // `sources: ~` or `sources: null`: the value is on the key's line.
                out[key_line - 1] = "sources:\n".into();
            } else if !out[key_line - 1].ends_with('\n') {
                out[key_line - 1].push('\n');
            }
            out.insert(key_line, block(&entry_for(None), 2));
            Ok(out.concat())
        }
        Node::Map(entries) if !entries.is_empty() && !is_flow(lines, value) => {
            let indent = entries[0].0.pos.col - 1;
            let (start, end) = match entries.iter().position(|(k, _)| k.as_str() == Some(name)) {
                Some(at) => {
                    let start = entries[at].0.pos.line;
                    let next = entries
                        .get(at + 1)
                        .map_or(section_end, |(k, _)| k.pos.line - 1);
                    (start, trim_tail(lines, start, next, indent))
                }
                None => {
                    let last = entries[entries.len() - 1].0.pos.line;
                    let end = trim_tail(lines, last, section_end, indent);
                    (end + 1, end)
                }
            };
            let existing = value.get(name);
            Ok(splice(
                lines,
                start,
                end,
                &block(&entry_for(existing), indent),
            ))
        }
        Node::Map(_) => {
            // Flow style (`sources: {...}`, possibly over several lines): rewrite the section.
            let mut sources = to_json(value);
            if let (Value::Object(map), Value::Object(entry)) =
                (&mut sources, entry_for(value.get(name)))
            {
                map.extend(entry);
            }
            let end = trim_tail(lines, key.pos.line, section_end, 0);
            let replacement = format!(
                "sources:\n{}",
                indent_block(&crate::yaml::emit_json(&sources), 2)
            );
            Ok(splice(lines, key.pos.line, end, &replacement))
        }
        _ => Err(format!(
            "`sources:` (line {}) is not a mapping; fix it before adding an agent",
            key.pos.line
        )),
    }
}

/// The last line of an entry that starts at `start` and may run to `end` (1-based,
/// inclusive), leaving out trailing blank lines and comments at the entry's indentation or
/// less: those introduce what follows, not this entry.
fn trim_tail(lines: &[&str], start: usize, end: usize, indent: usize) -> usize {
    let mut last = end.min(lines.len());
    while last > start {
        let line = lines[last - 1];
        let trimmed = line.trim_start();
        let line_indent = line.len() - trimmed.len();
        let blank = trimmed.trim().is_empty();
        if blank || (trimmed.starts_with('#') && line_indent <= indent) {
            last -= 1;
        } else {
            break;
        }
    }
    last
}

/// Replaces lines `start..=end` (1-based; `end = start - 1` inserts before `start`).
fn splice(lines: &[&str], start: usize, end: usize, replacement: &str) -> String {
    let mut out = String::new();
    for line in &lines[..start - 1] {
        out.push_str(line);
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(replacement);
    for line in &lines[end.min(lines.len())..] {
        out.push_str(line);
    }
    out
}

/// `value` as block YAML indented by `indent` spaces.
fn block(value: &Value, indent: usize) -> String {
    indent_block(&crate::yaml::emit_json(value), indent)
}

fn indent_block(text: &str, indent: usize) -> String {
    text.lines()
        .map(|line| format!("{}{line}\n", " ".repeat(indent)))
        .collect()
}

fn with_final_newline(text: &str) -> String {
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// True when the node is written in flow style (`{...}`).
fn is_flow(lines: &[&str], node: &Spanned) -> bool {
    lines
        .get(node.pos.line.wrapping_sub(1))
        .and_then(|line| line.chars().nth(node.pos.col.wrapping_sub(1)))
        == Some('{')
}

fn to_json(node: &Spanned) -> Value {
    match &node.node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(i) => Value::from(*i),
        Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Node::Str(s) => Value::String(s.clone()),
        Node::Seq(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.key_text(), to_json(v)))
                .collect(),
        ),
    }
}

fn check_reads_back(
    text: &str,
    name: &str,
    address: &str,
    fingerprint: &str,
) -> Result<(), String> {
    let fail = || {
        format!("could not add `{name}` to the config without breaking it; edit the file by hand")
    };
    let root = crate::yaml::parse(text)
        .map_err(|_| fail())?
        .ok_or_else(fail)?;
    let entry = root
        .get("sources")
        .and_then(|s| s.get(name))
        .ok_or_else(fail)?;
    let same =
        |key: &str, want: &str| entry.get(key).and_then(Spanned::as_str) == Some(want.trim());
    if same("address", address) && same("fingerprint", fingerprint) && same("type", "agent") {
        Ok(())
    } else {
        Err(fail())
    }
}
