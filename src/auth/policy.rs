//! Authorization rules in oslo.policy's language (a subset), with upstream Blazar's defaults.
//!
//! A rule is an expression over the caller's credentials and the target (the lease's project and
//! user): `role:admin`, `project_id:%(project_id)s`, `user_id:%(user_id)s`, `is_admin:True`,
//! `rule:<name>`, `@` (always), `!` (never), combined with `and`, `or`, `not` and parentheses.
//! Rules can be overridden with a YAML file (`"blazar:leases:get": "rule:admin"`), loaded at start;
//! a bad file stops the server with a message that names the rule.

use std::{collections::BTreeMap, path::Path};

/// Upstream's default rules (`blazar/policies/*.py`), with the new (non-deprecated) defaults:
/// reading a lease needs the reader role in its project, changing it the member role.
pub const DEFAULT_RULES: &[(&str, &str)] = &[
    ("admin", "is_admin:True or role:admin"),
    (
        "project_reader_or_admin",
        "(role:reader and project_id:%(project_id)s) or rule:admin",
    ),
    (
        "project_member_or_admin",
        "(role:member and project_id:%(project_id)s) or rule:admin",
    ),
    ("blazar:leases:get", "rule:project_reader_or_admin"),
    ("blazar:leases:post", "rule:project_member_or_admin"),
    ("blazar:leases:put", "rule:project_member_or_admin"),
    ("blazar:leases:delete", "rule:project_member_or_admin"),
    // Capacity planning (extensions): any member may ask; what they see of others is limited.
    ("blazar:leases:plan", "rule:project_member_or_admin"),
    (
        "blazar:oshosts:availability",
        "rule:project_member_or_admin",
    ),
    ("blazar:oshosts:calendar", "rule:project_member_or_admin"),
    ("blazar:oshosts:get", "rule:admin"),
    ("blazar:oshosts:post", "rule:admin"),
    ("blazar:oshosts:put", "rule:admin"),
    ("blazar:oshosts:delete", "rule:admin"),
    ("blazar:oshosts:get_allocations", "rule:admin"),
    ("blazar:oshosts:get_resource_properties", "rule:admin"),
    ("blazar:oshosts:update_resource_properties", "rule:admin"),
    ("blazar:plugins:get", "@"),
];

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub project_id: &'a str,
    pub user_id: &'a str,
    pub roles: &'a [String],
}

/// What they ask about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target<'a> {
    pub project_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Always,
    Never,
    Check { kind: String, value: String },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone)]
pub struct Policy {
    rules: BTreeMap<String, Expr>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {message}")]
    File { path: String, message: String },
    #[error("policy rule {rule:?}: {message}")]
    Rule { rule: String, message: String },
}

impl Policy {
    /// Upstream's defaults.
    pub fn defaults() -> Self {
        Self::with_overrides(BTreeMap::new()).expect("the default rules are valid")
    }

    /// Defaults overridden by a YAML (or JSON) file of `"name": "expression"` pairs.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let file_err = |message: String| PolicyError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        let overrides: BTreeMap<String, String> = if text.trim().is_empty() {
            BTreeMap::new()
        } else {
            serde_yaml::from_str(&text).map_err(|e| {
                file_err(format!(
                    "{e} (expected a mapping of rule names to rule strings)"
                ))
            })?
        };
        Self::with_overrides(overrides)
    }

    fn with_overrides(overrides: BTreeMap<String, String>) -> Result<Self, PolicyError> {
        let mut texts: BTreeMap<String, String> = DEFAULT_RULES
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        texts.extend(overrides);
        let mut rules = BTreeMap::new();
        for (name, text) in &texts {
            let expr = parse(text).map_err(|message| PolicyError::Rule {
                rule: name.clone(),
                message,
            })?;
            rules.insert(name.clone(), expr);
        }
        let policy = Policy { rules };
        for name in policy.rules.keys() {
            policy.check_references(name, &mut Vec::new())?;
        }
        Ok(policy)
    }

    /// Every `rule:x` must exist, and no rule may refer back to itself.
    fn check_references(&self, name: &str, path: &mut Vec<String>) -> Result<(), PolicyError> {
        if path.iter().any(|p| p == name) {
            return Err(PolicyError::Rule {
                rule: path[0].clone(),
                message: format!(
                    "rules refer to each other in a loop: {} -> {name}",
                    path.join(" -> ")
                ),
            });
        }
        let Some(expr) = self.rules.get(name) else {
            return Err(PolicyError::Rule {
                rule: path.last().cloned().unwrap_or_default(),
                message: format!("refers to rule:{name}, which does not exist"),
            });
        };
        path.push(name.to_string());
        let mut refs = Vec::new();
        collect_rule_refs(expr, &mut refs);
        for r in refs {
            self.check_references(&r, path)?;
        }
        path.pop();
        Ok(())
    }

    /// Whether `creds` may do `rule` on `target`. An unknown rule name is refused.
    pub fn allows(&self, rule: &str, creds: &Credentials<'_>, target: &Target<'_>) -> bool {
        self.rules
            .get(rule)
            .is_some_and(|e| self.eval(e, creds, target))
    }

    fn eval(&self, e: &Expr, c: &Credentials<'_>, t: &Target<'_>) -> bool {
        match e {
            Expr::Always => true,
            Expr::Never => false,
            Expr::And(parts) => parts.iter().all(|p| self.eval(p, c, t)),
            Expr::Or(parts) => parts.iter().any(|p| self.eval(p, c, t)),
            Expr::Not(inner) => !self.eval(inner, c, t),
            Expr::Check { kind, value } => {
                let wanted = match value.strip_prefix("%(").and_then(|v| v.strip_suffix(")s")) {
                    Some("project_id") => t.project_id.map(str::to_string),
                    Some("user_id") => t.user_id.map(str::to_string),
                    Some(_) => None,
                    None => Some(value.clone()),
                };
                let Some(wanted) = wanted else {
                    return false;
                };
                match kind.as_str() {
                    "rule" => self.allows(&wanted, c, t),
                    "role" => c.roles.iter().any(|r| r.eq_ignore_ascii_case(&wanted)),
                    "is_admin" => {
                        // Admin means the admin role here (no admin-context tokens).
                        let is_admin = c.roles.iter().any(|r| r == "admin");
                        wanted.eq_ignore_ascii_case("true") == is_admin
                    }
                    "project_id" => c.project_id == wanted,
                    "user_id" => c.user_id == wanted,
                    _ => false,
                }
            }
        }
    }
}

fn collect_rule_refs(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Check { kind, value } if kind == "rule" => out.push(value.clone()),
        Expr::And(p) | Expr::Or(p) => p.iter().for_each(|x| collect_rule_refs(x, out)),
        Expr::Not(x) => collect_rule_refs(x, out),
        _ => {}
    }
}

/// Splits on whitespace, with parentheses as their own tokens (but `%(project_id)s` kept whole).
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for word in text.split_whitespace() {
        let mut w = word;
        while let Some(rest) = w.strip_prefix('(') {
            tokens.push("(".to_string());
            w = rest;
        }
        let mut closing = 0;
        while let Some(rest) = w.strip_suffix(')') {
            w = rest;
            closing += 1;
        }
        if !w.is_empty() {
            tokens.push(w.to_string());
        }
        tokens.extend(std::iter::repeat_n(")".to_string(), closing));
    }
    tokens
}

fn parse(text: &str) -> Result<Expr, String> {
    let tokens = tokenize(text);
    if tokens.is_empty() {
        return Ok(Expr::Always);
    }
    let mut pos = 0;
    let e = parse_or(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(format!("unexpected {:?} in {text:?}", tokens[pos]));
    }
    Ok(e)
}

fn parse_or(t: &[String], pos: &mut usize) -> Result<Expr, String> {
    let mut parts = vec![parse_and(t, pos)?];
    while t.get(*pos).is_some_and(|s| s == "or") {
        *pos += 1;
        parts.push(parse_and(t, pos)?);
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap()
    } else {
        Expr::Or(parts)
    })
}

fn parse_and(t: &[String], pos: &mut usize) -> Result<Expr, String> {
    let mut parts = vec![parse_not(t, pos)?];
    while t.get(*pos).is_some_and(|s| s == "and") {
        *pos += 1;
        parts.push(parse_not(t, pos)?);
    }
    Ok(if parts.len() == 1 {
        parts.pop().unwrap()
    } else {
        Expr::And(parts)
    })
}

fn parse_not(t: &[String], pos: &mut usize) -> Result<Expr, String> {
    if t.get(*pos).is_some_and(|s| s == "not") {
        *pos += 1;
        return Ok(Expr::Not(Box::new(parse_not(t, pos)?)));
    }
    parse_atom(t, pos)
}

fn parse_atom(t: &[String], pos: &mut usize) -> Result<Expr, String> {
    let Some(tok) = t.get(*pos) else {
        return Err("the rule ends where a check was expected".into());
    };
    *pos += 1;
    match tok.as_str() {
        "(" => {
            let e = parse_or(t, pos)?;
            if t.get(*pos).map(String::as_str) != Some(")") {
                return Err("a '(' is not closed".into());
            }
            *pos += 1;
            Ok(e)
        }
        "@" => Ok(Expr::Always),
        "!" => Ok(Expr::Never),
        ")" | "and" | "or" => Err(format!("unexpected {tok:?}")),
        check => {
            let (kind, value) = check
                .split_once(':')
                .ok_or_else(|| format!("{check:?} is not a check such as role:admin"))?;
            if kind.is_empty() || value.is_empty() {
                return Err(format!("{check:?} is not a check such as role:admin"));
            }
            if !matches!(
                kind,
                "rule" | "role" | "is_admin" | "project_id" | "user_id"
            ) {
                return Err(format!(
                    "{kind:?} checks are not supported (use rule, role, is_admin, project_id, user_id)"
                ));
            }
            Ok(Expr::Check {
                kind: kind.to_string(),
                value: value.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn defaults_as_upstream() {
        let p = Policy::defaults();
        let member = roles(&["member", "reader"]);
        let reader = roles(&["reader"]);
        let admin = roles(&["admin", "member", "reader"]);
        let alice = Credentials {
            project_id: "alpha",
            user_id: "alice",
            roles: &member,
        };
        let dave = Credentials {
            project_id: "alpha",
            user_id: "dave",
            roles: &reader,
        };
        let root = Credentials {
            project_id: "beta",
            user_id: "root",
            roles: &admin,
        };
        let alpha = Target {
            project_id: Some("alpha"),
            user_id: Some("alice"),
        };
        let beta = Target {
            project_id: Some("beta"),
            user_id: Some("bob"),
        };
        assert!(p.allows("blazar:leases:get", &alice, &alpha));
        assert!(p.allows("blazar:leases:put", &alice, &alpha));
        assert!(
            !p.allows("blazar:leases:get", &alice, &beta),
            "another project's lease"
        );
        assert!(p.allows("blazar:leases:get", &dave, &alpha), "readers read");
        assert!(
            !p.allows("blazar:leases:delete", &dave, &alpha),
            "readers do not write"
        );
        assert!(
            p.allows("blazar:leases:delete", &root, &alpha),
            "admins do everything"
        );
        assert!(
            !p.allows("blazar:oshosts:post", &alice, &alpha),
            "hosts are admin-only"
        );
        assert!(p.allows("blazar:oshosts:post", &root, &beta));
        assert!(!p.allows("no:such:rule", &root, &beta));
    }

    #[test]
    fn expressions() {
        let p = Policy::with_overrides(BTreeMap::from([
            ("a".to_string(), "not (role:x or role:y) and !".to_string()),
            ("b".to_string(), "@".to_string()),
            ("c".to_string(), "user_id:%(user_id)s or role:x".to_string()),
            ("d".to_string(), "(role:x)".to_string()),
            ("e".to_string(), "".to_string()),
        ]))
        .unwrap();
        let none = roles(&[]);
        let x = roles(&["X"]);
        let me = Credentials {
            project_id: "p",
            user_id: "u",
            roles: &none,
        };
        let t = Target {
            project_id: Some("p"),
            user_id: Some("u"),
        };
        assert!(!p.allows("a", &me, &t));
        assert!(p.allows("b", &me, &t));
        assert!(p.allows("c", &me, &t));
        assert!(!p.allows(
            "c",
            &me,
            &Target {
                user_id: Some("v"),
                ..t
            }
        ));
        assert!(
            p.allows("d", &Credentials { roles: &x, ..me }, &t),
            "roles compare without case"
        );
        assert!(p.allows("e", &me, &t), "an empty rule always passes");
    }

    #[test]
    fn bad_rules_are_named() {
        for (rule, needle) in [
            ("role:", "not a check"),
            ("(role:a", "not closed"),
            ("role:a or", "ends where"),
            ("domain_id:x", "not supported"),
            ("rule:missing", "does not exist"),
            ("rule:x:loop", "does not exist"),
        ] {
            let err = Policy::with_overrides(BTreeMap::from([("x".to_string(), rule.to_string())]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(needle) && err.contains("\"x\""),
                "{rule}: {err}"
            );
        }
        let err = Policy::with_overrides(BTreeMap::from([
            ("x".to_string(), "rule:y".to_string()),
            ("y".to_string(), "rule:x".to_string()),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("loop"), "{err}");
    }
}
