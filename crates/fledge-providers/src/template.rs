//! `{{name}}` placeholders in queries and URLs.
//!
//! Deliberately tiny: a placeholder is replaced by its value verbatim, an unknown
//! placeholder is an error (a typo would otherwise send a query that silently matches
//! nothing), and there is no logic. Values are escaped by the caller when the target
//! language needs it (see [`crate::metrics::prometheus`]).

/// Replaces every `{{key}}` in `template` with its value from `vars`.
///
/// Whitespace inside the braces is allowed (`{{ app }}`). An unknown key or an
/// unclosed `{{` is an error naming the placeholder.
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("unclosed `{{{{` in template `{template}`"));
        };
        let key = after[..end].trim();
        let Some((_, value)) = vars.iter().find(|(k, _)| *k == key) else {
            let known: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "unknown placeholder `{{{{{key}}}}}` in template `{template}` (known: {})",
                known.join(", ")
            ));
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_known_placeholders() {
        let got = render(
            r#"sum(x{app="{{app}}",version="{{ version }}"}[{{window}}])"#,
            &[("app", "shop"), ("version", "v2"), ("window", "300s")],
        )
        .unwrap();
        assert_eq!(got, r#"sum(x{app="shop",version="v2"}[300s])"#);
    }

    #[test]
    fn unknown_or_unclosed_placeholders_are_errors() {
        let err = render("{{ap}}", &[("app", "shop")]).unwrap_err();
        assert!(
            err.contains("{{ap}}") && err.contains("known: app"),
            "{err}"
        );
        assert!(render("x{{app", &[("app", "shop")]).is_err());
        assert_eq!(render("no placeholders", &[]).unwrap(), "no placeholders");
    }
}
