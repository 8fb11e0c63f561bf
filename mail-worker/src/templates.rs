//! Email templates from outside the binary: `MAIL_TEMPLATE_DIR` replaces built-in templates and
//! adds languages without a rebuild, and `mail-worker templates check DIR` tries a directory
//! before it is deployed. Both go through [`load`]: every template, built-in or not, is
//! rendered with sample values for every kind of email before the worker takes a job, so a
//! template that would fail real emails stops the start, naming its file and line, instead of
//! sending job after job to the dead letters.
//!
//! The directory is laid out like `mail-worker/templates/`: `<locale>/<file>`, the file names
//! being those of [`TEMPLATE_FILES`]. A file replaces the built-in template of its name. A
//! folder for a language the worker has no templates for is a new language: it needs every
//! email's subject, text and HTML (copying `en/` and translating it is the way to start).
//! Anything else (an unknown file name, a file outside a locale folder, a folder whose name is
//! not a language tag) is refused, because a misspelt name would otherwise change nothing and
//! say nothing. Hidden entries (`.git`, the `..data` links of a Kubernetes volume) are skipped.

use std::collections::{BTreeSet, HashMap};
use std::error::Error as _;
use std::path::{Path, PathBuf};

use chrono::DateTime;
use shared::{
    locale::Locale,
    message::{Factor, SecurityEvent},
};

use crate::render::{EmailContent, RenderError, Rendered, Renderer, TEMPLATE_FILES};

/// One thing wrong with a template, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file: its path in the directory, or `built-in <locale>/<file>`.
    pub file: String,
    /// The line in that file, when it is known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Everything wrong with the templates; displayed one problem per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A renderer whose every template has rendered every kind of email.
#[derive(Debug)]
pub struct Loaded {
    pub renderer: Renderer,
    /// Templates in all (built-in and from the directory, each name once).
    pub templates: usize,
    /// Files read from the directory.
    pub from_dir: usize,
}

/// The built-in templates with those of `dir` over them, every one rendered with
/// [`samples`] in every locale folder; `Err` lists every problem found.
pub fn load(product_name: &str, dir: Option<&Path>) -> Result<Loaded, Problems> {
    let mut renderer = Renderer::new(product_name).map_err(|e| match e {
        RenderError::Template(e) => Problems(vec![locate(&e, &Origins::default(), "")]),
        other => Problems(vec![Problem {
            file: "PRODUCT_NAME".into(),
            line: None,
            message: other.to_string(),
        }]),
    })?;
    let mut problems = Vec::new();
    let files = match dir {
        Some(dir) => read(dir, &mut problems),
        None => Vec::new(),
    };
    let origins = Origins(
        (files.iter())
            .map(|f| (f.name.clone(), f.path.clone()))
            .collect(),
    );
    let mut templates = Locale::ALL.len() * TEMPLATE_FILES.len();
    let mut incomplete = Vec::new();
    for file in &files {
        if !is_built_in(&file.name) {
            templates += 1;
        }
        if let Err(e) = renderer.add(file.name.clone(), file.source.clone()) {
            incomplete.push(locate(&e, &origins, &file.name));
        }
    }
    if let Some(dir) = dir {
        incomplete.extend(missing_files(dir, &files));
    }
    // A template that did not parse, or is missing, would only be reported again by every
    // email it is part of.
    if incomplete.is_empty() {
        problems.extend(try_every_email(&renderer, &origins));
    }
    problems.extend(incomplete);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    Ok(Loaded {
        renderer,
        templates,
        from_dir: files.len(),
    })
}

/// Sample content: one email of every kind with every optional value, then those with
/// optional values without them (a template's `{% if %}` and `{% else %}` both run), and a
/// security notice of every event, each way it can be worded. The links carry `&` so that
/// an HTML template is seen escaping them.
pub fn samples() -> Vec<EmailContent> {
    let base = "https://accounts.example.com";
    let changed_at = DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    let reset = |expires_in_minutes, ip: Option<&str>| EmailContent::PasswordReset {
        link: format!("{base}/reset-password?token=sample.Zx1Tqg.abc-DEF_123&lang=en"),
        code: "0123 4567".into(),
        code_url: format!("{base}/reset-password"),
        expires_in_minutes,
        requested_from_ip: ip.map(str::to_owned),
    };
    let changed = |from_ip: Option<&str>, lock_url: Option<String>| EmailContent::PasswordChanged {
        changed_at,
        from_ip: from_ip.map(str::to_owned),
        forgot_password_url: format!("{base}/forgot-password"),
        lock_url,
    };
    vec![
        reset(90, Some("203.0.113.7")),
        EmailContent::EmailVerification {
            link: format!("{base}/verify-email?token=sample.Zx1Tqg.v-1&x=2"),
            expires_in_hours: 24,
        },
        EmailContent::AccountExists {
            sign_in_url: format!("{base}/sign-in"),
            forgot_password_url: format!("{base}/forgot-password?from=sign-up&src=mail"),
        },
        EmailContent::NoAccount {
            sign_up_url: format!("{base}/sign-up?from=reset&src=mail"),
        },
        changed(
            Some("198.51.100.23"),
            Some(format!("{base}/lock-account?token=sample.Zx1Tqg.lock&n=1")),
        ),
        reset(0, None),
        changed(None, None),
    ]
    .into_iter()
    .chain(security_notices())
    .collect()
}

/// A security notice of every event: each with its links and IP, then every other wording
/// (a few recovery codes left, many, none; each factor; by support) without them.
fn security_notices() -> Vec<EmailContent> {
    let base = "https://accounts.example.com";
    let at = DateTime::from_timestamp(1_795_000_000, 0).unwrap_or_default();
    let notice = |event, linked: bool| EmailContent::SecurityNotice {
        event,
        at,
        from_ip: linked.then(|| "198.51.100.23".to_owned()),
        forgot_password_url: format!("{base}/forgot-password?from=notice&src=mail"),
        lock_url: linked.then(|| format!("{base}/lock-account?token=sample.Zx1Tqg.lock&n=2")),
    };
    let used = |remaining| SecurityEvent::RecoveryCodeUsed { remaining };
    let removed = |factor, by_support| SecurityEvent::FactorRemoved { factor, by_support };
    let signed_in = |device: &str, ip_prefix: Option<&str>| SecurityEvent::NewSignIn {
        device: device.to_owned(),
        ip_prefix: ip_prefix.map(str::to_owned),
    };
    let linked = [
        signed_in("Firefox on Linux", Some("203.0.113.0/24")),
        used(1),
        SecurityEvent::FactorAdded {
            factor: Factor::Totp,
        },
        removed(Factor::Totp, false),
        SecurityEvent::RecoveryCodesReplaced,
    ];
    let unlinked = [
        signed_in("", None),
        used(0),
        used(2),
        used(7),
        SecurityEvent::FactorAdded {
            factor: Factor::Passkey,
        },
        removed(Factor::Passkey, true),
        removed(Factor::Totp, true),
        removed(Factor::Passkey, false),
    ];
    (linked.into_iter().map(|event| notice(event, true)))
        .chain(unlinked.into_iter().map(|event| notice(event, false)))
        .collect()
}

/// A template file read from the directory.
struct File {
    /// `<locale>/<file>`, the locale's tag as the worker spells it.
    name: String,
    path: PathBuf,
    source: String,
}

/// Where each template name read from the directory came from.
#[derive(Default)]
struct Origins(HashMap<String, PathBuf>);

impl Origins {
    /// The file a template name is read from, as a person finds it.
    fn file(&self, name: &str) -> String {
        match self.0.get(name) {
            Some(path) => path.display().to_string(),
            None => format!("built-in {name}"),
        }
    }
}

/// Whether `name` (`<locale>/<file>`) is the name of a built-in template.
fn is_built_in(name: &str) -> bool {
    name.split_once('/').is_some_and(|(folder, file)| {
        Locale::ALL.iter().any(|l| l.as_str() == folder) && TEMPLATE_FILES.contains(&file)
    })
}

/// The template files under `dir`; what is not one is a problem.
fn read(dir: &Path, problems: &mut Vec<Problem>) -> Vec<File> {
    let mut files = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for folder in entries(dir, problems) {
        let Some(tag) = folder_tag(&folder, problems) else {
            continue;
        };
        if let Some(first) = seen.insert(tag.clone(), folder.clone()) {
            problems.push(at(
                &folder,
                format!("the same language as {}", first.display()),
            ));
            continue;
        }
        let paths = entries(&folder, problems);
        if paths.is_empty() {
            problems.push(at(&folder, "an empty locale folder".into()));
        }
        for path in paths {
            let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                problems.push(at(&path, "a folder inside a locale folder".into()));
            } else if !TEMPLATE_FILES.contains(&file_name) {
                problems.push(at(
                    &path,
                    format!(
                        "not a template name; a locale folder holds {}",
                        TEMPLATE_FILES.join(", ")
                    ),
                ));
            } else {
                match std::fs::read_to_string(&path) {
                    Ok(source) => files.push(File {
                        name: format!("{tag}/{file_name}"),
                        path,
                        source,
                    }),
                    Err(e) => problems.push(at(&path, format!("cannot read it: {e}"))),
                }
            }
        }
    }
    files
}

/// The entries of `dir` that are not hidden, in name order.
fn entries(dir: &Path, problems: &mut Vec<Problem>) -> Vec<PathBuf> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) => {
            problems.push(at(dir, format!("cannot read the directory: {e}")));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = (listing.filter_map(Result::ok))
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().map(|n| n.to_string_lossy());
            !name.is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
}

/// The locale tag of a top-level entry: a built-in locale in its own spelling (`zh-cn` is
/// `zh-CN`), or a new language as the folder spells it.
fn folder_tag(path: &Path, problems: &mut Vec<Problem>) -> Option<String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !path.is_dir() {
        problems.push(at(
            path,
            "not a locale folder: templates go in <locale>/<file>, e.g. en/password_reset.subject.j2"
                .into(),
        ));
        return None;
    }
    let builtin = Locale::ALL
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(name));
    if let Some(locale) = builtin {
        return Some(locale.as_str().to_owned());
    }
    if !is_language_tag(name) {
        problems.push(at(
            path,
            "not a language tag (such as it, nl or pt-PT) for a locale folder".into(),
        ));
        return None;
    }
    Some(name.to_owned())
}

/// A BCP 47 tag's shape: a language of 2 or 3 letters, then subtags of 1 to 8 letters and
/// digits (`it`, `pt-PT`, `zh-Hant-TW`, `es-419`).
fn is_language_tag(name: &str) -> bool {
    let mut subtags = name.split('-');
    let language = subtags.next().unwrap_or("");
    (2..=3).contains(&language.len())
        && language.chars().all(|c| c.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// The emails a new language's folder lacks: it has no built-in template to fall back to,
/// and an email half in another language is worse than one refused at start.
fn missing_files(dir: &Path, files: &[File]) -> Vec<Problem> {
    let folders: BTreeSet<&str> = (files.iter())
        .filter_map(|f| f.name.split_once('/').map(|(folder, _)| folder))
        .filter(|folder| !Locale::ALL.iter().any(|l| l.as_str() == *folder))
        .collect();
    let mut problems = Vec::new();
    for folder in folders {
        for file in TEMPLATE_FILES {
            // Layout and macros are whatever the emails extend and import (their own, or
            // another folder's); only the emails themselves must be there.
            let email = !(file.starts_with("layout.") || file.starts_with("macros."));
            let name = format!("{folder}/{file}");
            if email && !files.iter().any(|f| f.name == name) {
                problems.push(at(
                    &dir.join(&name),
                    "missing: a new language needs every email's subject, text and HTML \
                     (start from a copy of en/)"
                        .into(),
                ));
            }
        }
    }
    problems
}

/// Renders every sample in every locale folder; what fails or leaves a link out is a problem.
fn try_every_email(renderer: &Renderer, origins: &Origins) -> Vec<Problem> {
    let mut problems: Vec<Problem> = Vec::new();
    for folder in renderer.folders() {
        for sample in samples() {
            let kind = sample.kind();
            let found = match renderer.render_in(&sample, folder, Locale::from_tag(folder)) {
                Ok(mail) => unusable(&mail, &sample, folder, origins),
                Err(RenderError::Template(e)) => {
                    vec![locate(&e, origins, &format!("{folder}/{kind}.subject.j2"))]
                }
                Err(e) => vec![Problem {
                    file: origins.file(&format!("{folder}/{kind}.subject.j2")),
                    line: None,
                    message: e.to_string(),
                }],
            };
            // Several samples of a kind meet the same mistake: say it once.
            for problem in found {
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
    }
    problems
}

/// What makes a rendered email unusable: an empty subject, a link the text or the HTML
/// does not carry.
fn unusable(
    mail: &Rendered,
    sample: &EmailContent,
    folder: &str,
    origins: &Origins,
) -> Vec<Problem> {
    let kind = sample.kind();
    let file = |part: &str| origins.file(&format!("{folder}/{kind}.{part}.j2"));
    let mut problems = Vec::new();
    if mail.subject.is_empty() {
        problems.push(Problem {
            file: file("subject"),
            line: None,
            message: "the subject is empty".into(),
        });
    }
    for (field, url) in sample.links() {
        // A word of its own: the reset page's address is also the start of the reset link.
        let in_text = (mail.text.split_whitespace())
            .any(|word| word.trim_matches(|c| "()<>[]\"',;".contains(c)) == url);
        if !in_text {
            problems.push(Problem {
                file: file("txt"),
                line: None,
                message: format!("the email does not carry its link {{{{ {field} }}}}"),
            });
        }
        let href = format!("href=\"{}\"", shared::html::escape_html(url));
        if !mail.html.contains(&href) {
            problems.push(Problem {
                file: file("html"),
                line: None,
                message: format!("the email has no <a href=\"{{{{ {field} }}}}\">"),
            });
        }
    }
    problems
}

/// Where a minijinja error is: the innermost error that names a template (one in an imported
/// macro or an extended layout is wrapped by the template that called it), or `fallback`.
fn locate(error: &minijinja::Error, origins: &Origins, fallback: &str) -> Problem {
    let mut chain = vec![error];
    while let Some(next) = (chain.last().copied())
        .and_then(|e| e.source())
        .and_then(|s| s.downcast_ref::<minijinja::Error>())
    {
        chain.push(next);
    }
    let innermost = chain.iter().rev().find(|e| e.name().is_some()).copied();
    let cause = chain.last().copied().unwrap_or(error);
    let message = match cause.detail() {
        Some(detail) => format!("{}: {detail}", cause.kind()),
        None => cause.kind().to_string(),
    };
    match innermost.and_then(|e| e.name().map(|name| (name, e.line()))) {
        Some((name, line)) => Problem {
            file: origins.file(name),
            line,
            message,
        },
        None => Problem {
            file: origins.file(fallback),
            line: None,
            message,
        },
    }
}

/// A problem with no line, at `path`.
fn at(path: &Path, message: String) -> Problem {
    Problem {
        file: path.display().to_string(),
        line: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let path =
                std::env::temp_dir().join(format!("mail-templates-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&path).expect("a temporary directory");
            Self(path)
        }

        /// Writes `source` to `name` (`<locale>/<file>`) and returns its path.
        fn write(&self, name: &str, source: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("a folder");
            std::fs::write(&path, source).expect("written");
            path
        }

        /// A copy of the built-in English templates as the folder `tag`.
        fn copy_english_as(&self, tag: &str) {
            let en = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/en");
            for file in TEMPLATE_FILES {
                let source = std::fs::read_to_string(en.join(file)).expect("a built-in template");
                let source = source
                    .replace("\"en/", &format!("\"{tag}/"))
                    .replace("lang=\"en\"", &format!("lang=\"{tag}\""));
                self.write(&format!("{tag}/{file}"), &source);
            }
        }

        fn load(&self) -> Result<Loaded, Problems> {
            load("Example Accounts", Some(&self.0))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn reset() -> EmailContent {
        samples().remove(0)
    }

    #[test]
    fn the_built_in_templates_pass_the_check_every_start_makes() {
        let loaded = load("Example Accounts", None).expect("the built-in templates are sound");
        assert_eq!(loaded.templates, Locale::ALL.len() * TEMPLATE_FILES.len());
        assert_eq!(loaded.from_dir, 0);
        assert_eq!(loaded.renderer.folders().len(), Locale::ALL.len());
    }

    #[test]
    fn a_file_in_the_directory_replaces_the_built_in_template_of_its_name() {
        let dir = TempDir::new();
        dir.write(
            "en/password_reset.subject.j2",
            "Choose a new {{ product_name }} password\n",
        );
        dir.write(
            "zh-cn/password_reset.subject.j2",
            "{{ product_name }} 密码重置\n",
        );
        let loaded = dir.load().expect("sound templates");
        assert_eq!((loaded.templates, loaded.from_dir), (147, 2));
        let renderer = loaded.renderer;
        let en = renderer.render(&reset(), Locale::En).expect("renders");
        assert_eq!(en.subject, "Choose a new Example Accounts password");
        assert!(
            en.html
                .contains("<title>Choose a new Example Accounts password</title>")
        );
        // A folder spelt in another case is still the built-in locale.
        let zh = renderer.render(&reset(), Locale::ZhCn).expect("renders");
        assert_eq!(zh.subject, "Example Accounts 密码重置");
        // The rest stays built-in.
        let built_in = Renderer::new("Example Accounts").expect("built-in");
        let expected = built_in.render(&reset(), Locale::En).expect("renders");
        assert_eq!(en.text, expected.text);
        for locale in [Locale::Fr, Locale::Ja] {
            assert_eq!(
                renderer.render(&reset(), locale).expect("renders"),
                built_in.render(&reset(), locale).expect("renders")
            );
        }
    }

    #[test]
    fn a_new_folder_is_a_new_language_that_its_tag_reaches() {
        let dir = TempDir::new();
        dir.copy_english_as("it");
        dir.write(
            "it/password_reset.subject.j2",
            "Reimposta la password di {{ product_name }}\n",
        );
        let loaded = dir.load().expect("a complete new language");
        assert_eq!((loaded.templates, loaded.from_dir), (168, 21));
        let renderer = loaded.renderer;
        assert_eq!(renderer.folders().last().map(String::as_str), Some("it"));
        for tag in ["it", "it-IT", "IT_ch"] {
            let mail = renderer.render_tag(&reset(), tag).expect("renders");
            assert_eq!(mail.subject, "Reimposta la password di Example Accounts");
            assert!(mail.html.contains("<html lang=\"it\">"), "{tag}");
        }
        // Tags of the built-in languages are unchanged.
        let fr = renderer.render_tag(&reset(), "fr-CA").expect("renders");
        assert!(fr.subject.contains("Réinitialisez"), "{}", fr.subject);
        let unknown = renderer.render_tag(&reset(), "ko").expect("renders");
        assert_eq!(unknown.subject, "Reset your Example Accounts password");
    }

    #[test]
    fn a_new_language_without_every_email_is_refused_naming_what_is_missing() {
        let dir = TempDir::new();
        dir.write(
            "nl/password_reset.subject.j2",
            "Nieuw wachtwoord voor {{ product_name }}\n",
        );
        let Err(Problems(problems)) = dir.load() else {
            panic!("a new language with one file was accepted");
        };
        let missing: Vec<&str> = problems.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(problems.len(), 17, "{problems:?}");
        assert!(
            missing
                .iter()
                .all(|file| file.starts_with(&dir.0.join("nl").display().to_string()))
        );
        assert!(
            missing
                .iter()
                .any(|file| file.ends_with("nl/password_reset.txt.j2"))
        );
        assert!(problems[0].message.starts_with("missing"), "{problems:?}");
    }

    #[test]
    fn a_template_that_does_not_parse_stops_the_start_naming_its_file_and_line() {
        let dir = TempDir::new();
        let path = dir.write(
            "de/password_reset.txt.j2",
            "{% extends \"de/layout.txt.j2\" %}\n{% block body %}\n{{ link }\n{% endblock %}\n",
        );
        let Err(Problems(problems)) = dir.load() else {
            panic!("a template with a syntax error was accepted");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].file, path.display().to_string());
        assert_eq!(problems[0].line, Some(3));
        assert!(
            problems[0].message.starts_with("syntax error"),
            "{problems:?}"
        );
        let line = problems[0].to_string();
        assert!(
            line.starts_with(&format!("{}:3: syntax error", path.display())),
            "{line}"
        );
    }

    #[test]
    fn a_template_that_fails_with_sample_values_is_named_with_its_file_and_line() {
        let dir = TempDir::new();
        // Fails only for the emails without a request IP: the samples have both.
        let path = dir.write(
            "es/password_reset.txt.j2",
            "{% extends \"es/layout.txt.j2\" %}\n{% block body %}\n{{ link }} {{ code_url }}\n\
             {% if not requested_from_ip %}{{ requested_from_ipp }}{% endif %}\n{% endblock %}\n",
        );
        let Err(Problems(problems)) = dir.load() else {
            panic!("a template with an undefined variable was accepted");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].to_string(),
            format!("{}:4: undefined value", path.display())
        );
    }

    #[test]
    fn a_mistake_in_an_overridden_macro_is_named_where_it_is() {
        let dir = TempDir::new();
        let path = dir.write(
            "en/macros.html.j2",
            "{% macro button(url, label) -%}\n<a href=\"{{ url }}\">{{ label }}</a>\n{{ labl }}\n{%- endmacro %}\n",
        );
        let Err(Problems(problems)) = dir.load() else {
            panic!("a broken macro was accepted");
        };
        assert!(
            problems
                .iter()
                .all(|p| p.file == path.display().to_string() && p.line == Some(3)),
            "{problems:?}"
        );
    }

    #[test]
    fn an_email_that_leaves_out_its_link_is_refused() {
        let dir = TempDir::new();
        let path = dir.write(
            "fr/password_reset.html.j2",
            "{% extends \"fr/layout.html.j2\" %}\n{% block content %}\n<p>{{ code_url }} {{ code }}</p>\n{% endblock %}\n",
        );
        let Err(Problems(problems)) = dir.load() else {
            panic!("a reset email without its link was accepted");
        };
        let expected = format!(
            "{}: the email has no <a href=\"{{{{ link }}}}\">",
            path.display()
        );
        assert!(
            problems.iter().any(|p| p.to_string() == expected),
            "{problems:?}"
        );
        // The reset page's address alone is not the link that starts with it.
        let dir = TempDir::new();
        let path = dir.write(
            "en/password_reset.txt.j2",
            "{% extends \"en/layout.txt.j2\" %}\n{% block body %}\n{{ code_url }} {{ code }}\n{% endblock %}\n",
        );
        let Err(Problems(problems)) = dir.load() else {
            panic!("a reset email without its link was accepted");
        };
        let expected = format!(
            "{}: the email does not carry its link {{{{ link }}}}",
            path.display()
        );
        assert_eq!(
            problems.iter().map(Problem::to_string).collect::<Vec<_>>(),
            [expected]
        );
    }

    #[test]
    fn an_unknown_name_is_refused_naming_it_so_a_typo_does_not_pass_unnoticed() {
        let dir = TempDir::new();
        let typo = dir.write("en/pasword_reset.subject.j2", "Reset\n");
        let loose = dir.write("password_reset.subject.j2", "Reset\n");
        let folder = dir.write("English/password_reset.subject.j2", "Reset\n");
        let nested = dir.write("en/old/password_reset.subject.j2", "Reset\n");
        let Err(Problems(problems)) = dir.load() else {
            panic!("unknown names were accepted");
        };
        let files: Vec<&str> = problems.iter().map(|p| p.file.as_str()).collect();
        for path in [
            typo,
            loose,
            nested.parent().expect("its folder").to_path_buf(),
        ] {
            assert!(
                files.contains(&path.display().to_string().as_str()),
                "{path:?} in {files:?}"
            );
        }
        let folder = folder.parent().expect("its folder").display().to_string();
        assert!(files.contains(&folder.as_str()), "{files:?}");
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.message.starts_with("not a template name"))
        );
    }

    #[test]
    fn hidden_entries_are_skipped_and_a_missing_directory_is_a_problem() {
        let dir = TempDir::new();
        dir.write(".git/HEAD", "ref: refs/heads/main\n");
        dir.write("..data/en/anything", "x\n");
        dir.write("en/.password_reset.subject.j2.swp", "x\n");
        dir.write("en/password_reset.subject.j2", "Reset {{ product_name }}\n");
        let loaded = dir.load().expect("hidden entries and one template");
        assert_eq!(loaded.from_dir, 1);
        let gone = dir.0.join("nowhere");
        let Err(Problems(problems)) = load("Example Accounts", Some(&gone)) else {
            panic!("a missing directory was accepted");
        };
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .to_string()
                .starts_with(&format!("{}: cannot read", gone.display()))
        );
    }

    #[test]
    fn language_tags_are_told_from_other_names() {
        for tag in ["it", "nl", "pt-PT", "zh-Hant-TW", "es-419", "gsw"] {
            assert!(is_language_tag(tag), "{tag}");
        }
        for name in [
            "",
            "i",
            "English",
            "en_GB",
            "en-",
            "../en",
            "it-toolongsubtag",
            "e1",
        ] {
            assert!(!is_language_tag(name), "{name}");
        }
    }
}
