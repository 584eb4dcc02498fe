//! The texts of notifications and emails: `templates/email/NAME.txt` (first line
//! `Subject: ...`, then the plain text, which is also the in-app body) and `NAME.html`
//! (extending `layout.html`; values are HTML-escaped). The built-in files are compiled in;
//! `[notifications] templates_dir` overrides any of them by name.

use std::sync::{Arc, OnceLock, RwLock};

use serde_json::Value;

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../templates/email/", $name)))),*]
    };
}

const BUILTIN: &[(&str, &str)] = builtin!(
    "layout.html",
    "notice.txt",
    "notice.html",
    "dunning_reminder.txt",
    "dunning_reminder.html",
    "receipt.txt",
    "receipt.html",
    "key_created.txt",
    "key_created.html",
    "budget_alert.txt",
    "budget_alert.html",
    "booking.txt",
    "booking.html",
    "booking_confirmation.txt",
    "booking_confirmation.html",
    "digest.txt",
    "digest.html",
    "sign_in.txt",
    "sign_in.html",
);

#[derive(Debug, thiserror::Error)]
#[error("template {name}: {message}")]
pub struct TemplateError {
    pub name: String,
    pub message: String,
}

/// A notice's texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

struct Templates {
    env: minijinja::Environment<'static>,
    product: String,
}

fn current() -> &'static RwLock<Arc<Templates>> {
    static T: OnceLock<RwLock<Arc<Templates>>> = OnceLock::new();
    T.get_or_init(|| RwLock::new(Arc::new(load(None, "Quartermaster"))))
}

fn load(dir: Option<&std::path::Path>, product: &str) -> Templates {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, source) in BUILTIN {
        let own = dir.and_then(|d| std::fs::read_to_string(d.join(name)).ok());
        let text = own.unwrap_or_else(|| source.to_string());
        if let Err(e) = env.add_template_owned(name.to_string(), text) {
            tracing::warn!(template = name, error = %e, "a template does not parse; the built-in one is used");
            env.add_template(name, source)
                .expect("built-in templates parse");
        }
    }
    Templates {
        env,
        product: product.to_string(),
    }
}

/// Loads the templates (the built-in ones, overridden from `dir`); at startup and reload.
pub fn init(dir: Option<&std::path::Path>, product: &str) {
    *current().write().expect("templates lock") = Arc::new(load(dir, product));
}

/// Renders `name` (`name.txt` and `name.html`) with `context`.
pub fn render(name: &str, mut context: Value) -> Result<Rendered, TemplateError> {
    let t = current().read().expect("templates lock").clone();
    if let Value::Object(m) = &mut context {
        m.entry("product")
            .or_insert_with(|| Value::String(t.product.clone()));
    }
    let err = |e: minijinja::Error| TemplateError {
        name: name.to_string(),
        message: e.to_string(),
    };
    let txt = t
        .env
        .get_template(&format!("{name}.txt"))
        .and_then(|tpl| tpl.render(&context))
        .map_err(err)?;
    let html = t
        .env
        .get_template(&format!("{name}.html"))
        .and_then(|tpl| tpl.render(&context))
        .map_err(err)?;
    let (first, rest) = txt.split_once('\n').unwrap_or((&txt, ""));
    let subject = first
        .strip_prefix("Subject:")
        .ok_or_else(|| TemplateError {
            name: name.to_string(),
            message: "the .txt template must start with `Subject: `".into(),
        })?
        .trim()
        .to_string();
    Ok(Rendered {
        subject: subject.chars().filter(|c| !c.is_control()).collect(),
        text: rest.trim().to_string(),
        html,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_builtin_renders_and_html_is_escaped() {
        let r = render(
            "key_created",
            json!({"tenant": "acme", "name": "<script>x</script>", "prefix": "qm_ab"}),
        )
        .unwrap();
        assert_eq!(
            r.subject, "A new API key for acme: <script>x</script>",
            "the subject is text"
        );
        assert!(r.html.contains("&lt;script&gt;"), "{}", r.html);
        assert!(!r.html.contains("<script>"));
        assert!(r.text.contains("\"<script>x</script>\""));
        for name in [
            "notice",
            "dunning_reminder",
            "receipt",
            "budget_alert",
            "booking",
            "booking_confirmation",
            "digest",
            "sign_in",
        ] {
            let ctx = json!({"items": [], "count": 0, "percent": 90, "subject": "s", "title": "t", "tenant": "acme", "status": "confirmed", "n": 1, "amount": "1.00 USD"});
            let r = render(name, ctx).unwrap();
            assert!(!r.subject.is_empty(), "{name}");
            assert!(r.html.contains("<html"), "{name}");
        }
    }
}
