//! Bazel target patterns and labels, as far as a class needs them:
//! `//pkg:name`, `//pkg` (= `//pkg:pkg`), `//pkg:all`, `//pkg:*`,
//! `//pkg/...`, `//...` (optionally `:all`/`:*` after `...`).

/// A parsed pattern: the labels it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Package path without `//` (empty for the root package).
    pub package: String,
    /// `...`: the package and every package below it.
    pub recursive: bool,
    /// One target name, or `None` for every target.
    pub name: Option<String>,
}

impl Pattern {
    /// Parses a pattern of the main repository; `None` for anything else
    /// (external repos, relative or negative patterns).
    pub fn parse(text: &str) -> Option<Pattern> {
        let rest = text.strip_prefix("//")?;
        let (pkg, name) = match rest.split_once(':') {
            Some((p, n)) => (p, Some(n)),
            None => (rest, None),
        };
        let (package, recursive) = if pkg == "..." {
            (String::new(), true)
        } else if let Some(p) = pkg.strip_suffix("/...") {
            (p.to_string(), true)
        } else {
            (pkg.to_string(), false)
        };
        if package.contains("...") {
            return None;
        }
        let name = match name {
            Some("all") | Some("*") => None,
            // `//pkg/...:name` is not a Bazel pattern.
            Some(_) if recursive => return None,
            Some("") => return None,
            Some(n) => Some(n.to_string()),
            None if recursive => None,
            None => Some(package.rsplit('/').next().unwrap_or("").to_string()),
        };
        if name.as_deref() == Some("") {
            return None;
        }
        Some(Pattern {
            package,
            recursive,
            name,
        })
    }

    fn package_in_scope(&self, package: &str) -> bool {
        if self.recursive {
            self.package.is_empty()
                || package == self.package
                || package
                    .strip_prefix(self.package.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        } else {
            package == self.package
        }
    }

    /// Whether the label `//pkg:name` (a parsed single-target pattern) is named.
    pub fn matches_label(&self, label: &str) -> bool {
        let Some(l) = Pattern::parse(label) else {
            return false;
        };
        let (false, Some(name)) = (l.recursive, l.name.as_deref()) else {
            return false;
        };
        self.package_in_scope(&l.package) && self.name.as_deref().is_none_or(|n| n == name)
    }

    /// Whether every label `other` names is also named by `self`.
    pub fn contains(&self, other: &Pattern) -> bool {
        let scope = if other.recursive {
            self.recursive && self.package_in_scope(&other.package)
        } else {
            self.package_in_scope(&other.package)
        };
        scope
            && match (&self.name, &other.name) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            }
    }

    /// Whether some label is named by both.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        self.contains(other) || other.contains(self) || {
            let scope =
                self.package_in_scope(&other.package) || other.package_in_scope(&self.package);
            scope
                && match (&self.name, &other.name) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
                && (self.recursive || other.recursive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|| panic!("{s} parses"))
    }

    #[test]
    fn parses_the_pattern_forms() {
        assert_eq!(
            p("//..."),
            Pattern {
                package: String::new(),
                recursive: true,
                name: None
            }
        );
        assert_eq!(
            p("//a/b/...:all"),
            Pattern {
                package: "a/b".into(),
                recursive: true,
                name: None
            }
        );
        assert_eq!(
            p("//a/b"),
            Pattern {
                package: "a/b".into(),
                recursive: false,
                name: Some("b".into())
            }
        );
        assert_eq!(
            p("//:hello"),
            Pattern {
                package: String::new(),
                recursive: false,
                name: Some("hello".into())
            }
        );
        assert_eq!(p("//a:*").name, None);
        for bad in ["@x//a:b", "a:b", "-//a:b", "//a/...:b", "//a:", "//a/.../b"] {
            assert_eq!(Pattern::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn label_matching_and_containment() {
        assert!(p("//...").matches_label("//:hello"));
        assert!(p("//a/...").matches_label("//a/b:c"));
        assert!(p("//a/...").matches_label("//a:c"));
        assert!(!p("//a/...").matches_label("//ab:c"));
        assert!(p("//a:all").matches_label("//a:c"));
        assert!(!p("//a:all").matches_label("//a/b:c"));
        assert!(p("//a").matches_label("//a:a"));
        assert!(!p("//:hello").matches_label("//:upper"));

        assert!(p("//...").contains(&p("//a/...")));
        assert!(p("//a/...").contains(&p("//a/b:c")));
        assert!(!p("//a:all").contains(&p("//a/...")));
        assert!(!p("//:greeter").contains(&p("//...")));
        assert!(p("//:greeter").contains(&p("//:greeter")));
        assert!(p("//a/...").overlaps(&p("//...")));
        assert!(!p("//a/...").overlaps(&p("//b:c")));
    }
}
