//! The command templates of a scenario file: text with `{variable}`s that fleetcheck fills in
//! for each machine and operation, and `{peers|FORMAT|SEPARATOR}`, every machine of the case
//! (itself too) formatted with `[id]`, `[ip]`, `[role]` and joined (`{peers:ROLE|…}`: those of
//! role `ROLE` only). The file's own `[vars]` are filled in when the template is read (each a
//! template of fleetcheck's variables itself, `{{` for a literal brace). `{{`
//! and `}}` are a literal brace (as in `awk '{{ print $1 }}'`).

use std::collections::BTreeMap;
use std::fmt;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
    /// `{peers|FORMAT|SEP}`: FORMAT's own parts (text and `[field]`s), the separator and the
    /// role of `{peers:ROLE|…}`.
    Peers(Vec<PeerPart>, String, Option<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerPart {
    Text(String),
    Field(PeerField),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerField {
    Id,
    Ip,
    Role,
}

/// A machine of the case as `{peers|…}` formats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub id: String,
    /// Its address.
    pub ip: String,
    /// Its role (empty without roles).
    pub role: String,
}

/// What a template is filled in with: values by variable name, and the machines of the case.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    /// `{name}` → value.
    pub values: BTreeMap<&'static str, String>,
    /// Every machine of the case, for `{peers|…}`.
    pub peers: std::borrow::Cow<'a, [Peer]>,
}

/// Why a template cannot be read: one sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Template {
    /// Reads `text`, whose variables must be among `known` (and `{peers|…}` if `peers`).
    pub fn parse(text: &str, known: &[&str], peers: bool) -> Result<Template, TemplateError> {
        Self::parse_with(text, known, peers, &BTreeMap::new())
    }

    /// [`Template::parse`], with the file's own variables `vars` (`[vars]`) filled in now.
    pub fn parse_with(
        text: &str,
        known: &[&str],
        peers: bool,
        vars: &BTreeMap<String, String>,
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let at = &rest[i..];
            if at.starts_with("{{") || at.starts_with("}}") {
                literal.push_str(&at[..1]);
                rest = &at[2..];
                continue;
            }
            if at.starts_with('}') {
                return Err(TemplateError(
                    "has a `}` that closes nothing (write `}}` for a literal brace)".into(),
                ));
            }
            let end = at.find('}').ok_or_else(|| {
                TemplateError(
                    "has a `{` that is never closed (write `{{` for a literal brace)".into(),
                )
            })?;
            let inner = &at[1..end];
            rest = &at[end + 1..];
            if let Some(value) = vars.get(inner).filter(|_| !known.contains(&inner)) {
                // A variable of the file's own is a template too (of fleetcheck's variables).
                let own = Template::parse_with(value, known, peers, &BTreeMap::new())
                    .map_err(|e| TemplateError(format!("(through `{{{inner}}}`) {}", e.0)))?;
                for part in own.parts {
                    match part {
                        Part::Text(t) => literal.push_str(&t),
                        other => {
                            if !literal.is_empty() {
                                parts.push(Part::Text(std::mem::take(&mut literal)));
                            }
                            parts.push(other);
                        }
                    }
                }
                continue;
            }
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(Self::variable(inner, known, peers, vars)?);
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    fn variable(
        inner: &str,
        known: &[&str],
        peers: bool,
        vars: &BTreeMap<String, String>,
    ) -> Result<Part, TemplateError> {
        let (role, spec) = if let Some(filtered) = inner.strip_prefix("peers:") {
            match filtered.split_once('|') {
                Some((role, spec)) if !role.is_empty() => (Some(role.to_string()), Some(spec)),
                _ => {
                    return Err(TemplateError(format!(
                        "`{{{inner}}}` needs a role, a format and a separator: \
                         `{{peers:primary|[ip]|,}}`"
                    )))
                }
            }
        } else {
            (None, inner.strip_prefix("peers|"))
        };
        if let Some(spec) = spec {
            if !peers {
                return Err(TemplateError(format!(
                    "uses `{{{inner}}}`, but the machines' list has no meaning here"
                )));
            }
            let (format, sep) = spec.split_once('|').ok_or_else(|| {
                TemplateError(format!(
                    "`{{{inner}}}` needs a format and a separator: `{{peers|[id]=[ip]|,}}`"
                ))
            })?;
            return Ok(Part::Peers(
                Self::peer_format(format)?,
                sep.to_string(),
                role,
            ));
        }
        if known.contains(&inner) {
            return Ok(Part::Var(inner.to_string()));
        }
        let mut all: Vec<String> = known.iter().map(|k| format!("{{{k}}}")).collect();
        all.extend(vars.keys().map(|k| format!("{{{k}}}")));
        if peers {
            all.push("{peers|FORMAT|SEP}".into());
        }
        Err(TemplateError(format!(
            "uses `{{{inner}}}`, which is not a variable here (these are: {})",
            all.join(" ")
        )))
    }

    fn peer_format(format: &str) -> Result<Vec<PeerPart>, TemplateError> {
        let mut out = Vec::new();
        let mut rest = format;
        while let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(PeerPart::Text(rest[..i].to_string()));
            }
            let end = rest[i..].find(']').ok_or_else(|| {
                TemplateError(format!(
                    "the peers format `{format}` has a `[` never closed"
                ))
            })? + i;
            out.push(PeerPart::Field(match &rest[i + 1..end] {
                "id" => PeerField::Id,
                "ip" => PeerField::Ip,
                "role" => PeerField::Role,
                other => {
                    return Err(TemplateError(format!(
                        "the peers format names `[{other}]`; it knows [id], [ip] and [role]"
                    )))
                }
            }));
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            out.push(PeerPart::Text(rest.to_string()));
        }
        Ok(out)
    }

    /// The text with every variable filled in (a variable `vars` lacks renders empty; parsing
    /// against the names a caller fills in rules that out).
    pub fn render(&self, vars: &Vars<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(name) => {
                    out.push_str(vars.values.get(name.as_str()).map_or("", String::as_str))
                }
                Part::Peers(format, sep, role) => {
                    let each: Vec<String> = vars
                        .peers
                        .iter()
                        .filter(|p| role.as_ref().is_none_or(|r| *r == p.role))
                        .map(|p| {
                            format
                                .iter()
                                .map(|f| match f {
                                    PeerPart::Text(t) => t.as_str(),
                                    PeerPart::Field(PeerField::Id) => p.id.as_str(),
                                    PeerPart::Field(PeerField::Ip) => p.ip.as_str(),
                                    PeerPart::Field(PeerField::Role) => p.role.as_str(),
                                })
                                .collect()
                        })
                        .collect();
                    out.push_str(&each.join(sep));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_peers_and_braces() {
        let t = Template::parse(
            "etcd --name {id} --initial-cluster {peers|[id]=http://[ip]:2380|,} | awk '{{ print $1 }}'",
            &["id"],
            true,
        )
        .unwrap();
        let peers = [
            Peer {
                id: "a".into(),
                ip: "10.0.0.2".into(),
                role: String::new(),
            },
            Peer {
                id: "b".into(),
                ip: "10.0.0.3".into(),
                role: String::new(),
            },
        ];
        let vars = Vars {
            values: BTreeMap::from([("id", "a".to_string())]),
            peers: peers[..].into(),
        };
        assert_eq!(
            t.render(&vars),
            "etcd --name a --initial-cluster a=http://10.0.0.2:2380,b=http://10.0.0.3:2380 | awk '{ print $1 }'"
        );
    }

    #[test]
    fn peers_of_a_role_and_the_files_own_variables() {
        let own = BTreeMap::from([
            ("mode".to_string(), "sync".to_string()),
            ("me".to_string(), "[{id}] {{x}}".to_string()),
        ]);
        let t = Template::parse_with(
            "primary={peers:primary|[ip]|,} all={peers|[id]:[role]| } {mode} {id} {me}",
            &["id"],
            true,
            &own,
        )
        .unwrap();
        let peer = |id: &str, role: &str| Peer {
            id: id.into(),
            ip: format!("10.0.0.{}", id.len()),
            role: role.into(),
        };
        let peers = [peer("a", "primary"), peer("bb", "replica")];
        let vars = Vars {
            values: BTreeMap::from([("id", "bb".to_string())]),
            peers: peers[..].into(),
        };
        assert_eq!(
            t.render(&vars),
            "primary=10.0.0.1 all=a:primary bb:replica sync bb [bb] {x}"
        );
        let e = Template::parse_with("{nope}", &["id"], false, &own)
            .unwrap_err()
            .0;
        assert!(e.contains("(these are: {id} {me} {mode})"), "{e}");
        let e = Template::parse("{peers:|[ip]|,}", &[], true).unwrap_err().0;
        assert!(e.contains("needs a role"), "{e}");
    }

    #[test]
    fn bad_templates_say_why_in_one_sentence() {
        let e = |text: &str| Template::parse(text, &["id", "ip"], false).unwrap_err().0;
        assert!(
            e("x {nope}").contains("`{nope}`, which is not a variable here (these are: {id} {ip})")
        );
        assert!(e("x {id").contains("never closed"));
        assert!(e("x }").contains("closes nothing"));
        assert!(e("{peers|[id]|,}").contains("no meaning here"));
        let p = |text: &str| Template::parse(text, &[], true).unwrap_err().0;
        assert!(p("{peers|[id]}").contains("a format and a separator"));
        assert!(p("{peers|[name]|,}").contains("it knows [id], [ip] and [role]"));
    }
}
