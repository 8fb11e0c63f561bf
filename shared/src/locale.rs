//! The languages emails and pages are written in, and the one rule that maps what a client
//! asks for to one of them: the api negotiates `Accept-Language` into the job's `locale`, the
//! worker maps the job's `locale` to its templates, both with [`Locale::from_tag`].

/// A language the templates exist for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Locale {
    /// English, also the fallback.
    En,
    /// Chinese in Simplified characters.
    ZhCn,
    /// Spanish (one text for Spain and Latin America).
    Es,
    /// French.
    Fr,
    /// German.
    De,
    /// Japanese.
    Ja,
    /// Portuguese as written in Brazil, also what every other Portuguese reader gets.
    PtBr,
}

impl Locale {
    /// Every locale; the first is the fallback.
    pub const ALL: [Locale; 7] = [
        Locale::En,
        Locale::ZhCn,
        Locale::Es,
        Locale::Fr,
        Locale::De,
        Locale::Ja,
        Locale::PtBr,
    ];

    /// What a client that asks for nothing we have gets.
    pub const FALLBACK: Locale = Locale::En;

    /// The BCP 47 tag (the job's `locale` field and the template directory name).
    pub const fn as_str(self) -> &'static str {
        match self {
            Locale::En => "en",
            Locale::ZhCn => "zh-CN",
            Locale::Es => "es",
            Locale::Fr => "fr",
            Locale::De => "de",
            Locale::Ja => "ja",
            Locale::PtBr => "pt-BR",
        }
    }

    /// The locale a BCP 47 tag (`en-GB`, `zh-Hans-CN`, `zh_cn`, any case) asks for, if we have
    /// it. Chinese in Simplified characters (`zh`, `zh-CN`, `zh-Hans`, `zh-SG`, `zh-Hans-*`)
    /// is `zh-CN`; Traditional Chinese (`zh-TW`, `zh-HK`, `zh-Hant`) is not: its readers are
    /// better served by the next language they accept, or English, than by a script they may
    /// not read.
    ///
    /// Spanish, French, German and Japanese are one text each, whatever the region (`es-MX`,
    /// `fr-CA`, `de-CH`, `ja-JP`). Every Portuguese (`pt`, `pt-BR`, `pt-PT`, `pt-AO`) is
    /// `pt-BR`: a reader in Portugal notices Brazilian spelling and wording, but reads it
    /// without effort, which English would not give them.
    pub fn supported(tag: &str) -> Option<Locale> {
        let tag = tag.trim().replace('_', "-").to_ascii_lowercase();
        let mut subtags = tag.split('-');
        match (subtags.next(), subtags.next()) {
            (Some("en"), _) => Some(Locale::En),
            (Some("zh"), None | Some("hans" | "cn" | "sg")) => Some(Locale::ZhCn),
            (Some("es"), _) => Some(Locale::Es),
            (Some("fr"), _) => Some(Locale::Fr),
            (Some("de"), _) => Some(Locale::De),
            (Some("ja"), _) => Some(Locale::Ja),
            (Some("pt"), _) => Some(Locale::PtBr),
            _ => None,
        }
    }

    /// [`Self::supported`], or the fallback.
    pub fn from_tag(tag: &str) -> Locale {
        Self::supported(tag).unwrap_or(Self::FALLBACK)
    }

    /// The supported locale an `Accept-Language` header prefers most (highest q-value; ties:
    /// the earlier entry), or the fallback. At most 20 entries are read.
    pub fn negotiate(accept_language: &str) -> Locale {
        let mut best: Option<(f32, Locale)> = None;
        for (tag, q) in entries(accept_language) {
            if let Some(locale) = Self::supported(tag)
                && q > 0.0
                && best.is_none_or(|(bq, _)| q > bq)
            {
                best = Some((q, locale));
            }
        }
        best.map_or(Self::FALLBACK, |(_, l)| l)
    }
}

/// The first 20 entries of an `Accept-Language` header: each tag (trimmed) with its q-value
/// (1 when it has none or an unreadable one).
fn entries(accept_language: &str) -> impl Iterator<Item = (&str, f32)> {
    accept_language.split(',').take(20).map(|item| {
        let mut parts = item.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
            })
            .unwrap_or(1.0);
        (tag, q)
    })
}

/// Most languages kept of one `Accept-Language` (see [`preferences`]).
pub const MAX_PREFERENCES: usize = 6;

/// The languages an `Accept-Language` header asks for, most wanted first (q-value, then order),
/// as lower-case BCP 47 tags (`it-ch`), whether or not a built-in locale has them: a worker
/// may have templates an operator added for a language the api does not know
/// (`MAIL_TEMPLATE_DIR`). A tag refused (`q=0`), the wildcard, repeats and anything that is no
/// tag are left out; at most [`MAX_PREFERENCES`] are kept, of the first 20 entries.
pub fn preferences(accept_language: &str) -> Vec<String> {
    let mut ranked: Vec<(f32, String)> = Vec::new();
    for (tag, q) in entries(accept_language) {
        let tag = tag.replace('_', "-");
        let is_tag = (1..=35).contains(&tag.len())
            && tag.split('-').all(|sub| {
                (1..=8).contains(&sub.len()) && sub.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            && tag.as_bytes()[0].is_ascii_alphabetic();
        let tag = tag.to_ascii_lowercase();
        if is_tag && q > 0.0 && !ranked.iter().any(|(_, t)| *t == tag) {
            ranked.push((q, tag));
        }
    }
    // Stable: equal q-values keep the header's order.
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .take(MAX_PREFERENCES)
        .map(|(_, t)| t)
        .collect()
}

/// On the queue a locale is its tag (`"en"`, `"zh-CN"`, `"pt-BR"`). Reading is lenient: any tag maps to
/// the locale it asks for, or English (see [`Locale::from_tag`]), so a job from an api that
/// knows a language this worker has no templates for is written in English, not refused.
impl serde::Serialize for Locale {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Locale {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tag = String::deserialize(deserializer)?;
        Ok(Locale::from_tag(&tag))
    }
}

/// A tag, read as [`Locale::from_tag`] does.
impl From<&str> for Locale {
    fn from(tag: &str) -> Self {
        Locale::from_tag(tag)
    }
}

impl std::fmt::Display for Locale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn preferences_keep_every_language_asked_for_in_order_and_nothing_else() {
        assert_eq!(
            preferences("it-CH, de;q=0.5, fr;q=0.9, *;q=0.1, en;q=0, it-ch, x<y>, ;q=1"),
            ["it-ch", "fr", "de"]
        );
        assert_eq!(preferences("pt_BR,pt;q=0.9"), ["pt-br", "pt"]);
        assert!(preferences("").is_empty());
        assert!(preferences("1x, -, de-, a-toolongsubtag").is_empty());
        let many = ["aa", "bb", "cc", "dd", "ee", "ff", "gg", "hh"].join(",");
        assert_eq!(preferences(&many), ["aa", "bb", "cc", "dd", "ee", "ff"]);
    }

    use super::*;

    #[test]
    fn simplified_chinese_is_zh_cn_and_traditional_chinese_is_not_supported() {
        for tag in [
            "zh",
            "zh-CN",
            "zh-Hans",
            "zh_CN",
            "ZH-cn",
            "zh-Hans-CN",
            "zh-SG",
            " zh ",
        ] {
            assert_eq!(Locale::supported(tag), Some(Locale::ZhCn), "{tag}");
        }
        for tag in ["en", "en-US", "EN_gb"] {
            assert_eq!(Locale::supported(tag), Some(Locale::En), "{tag}");
        }
        for tag in [
            "", "it", "ko-KR", "zh-TW", "zh-Hant", "zh-HK", "zhx", "cn", "esp", "french", "../x",
        ] {
            assert_eq!(Locale::supported(tag), None, "{tag}");
            assert_eq!(Locale::from_tag(tag), Locale::En, "{tag}");
        }
    }

    #[test]
    fn every_region_of_spanish_french_german_and_japanese_gets_its_language() {
        let cases = [
            (["es", "es-ES", "es-419", "ES_mx"], Locale::Es),
            (["fr", "fr-FR", "fr-CA", "fr_be"], Locale::Fr),
            (["de", "de-DE", "de-AT", "DE-ch"], Locale::De),
            (["ja", "ja-JP", "JA_jp", " ja "], Locale::Ja),
        ];
        for (tags, locale) in cases {
            for tag in tags {
                assert_eq!(Locale::supported(tag), Some(locale), "{tag}");
            }
        }
    }

    #[test]
    fn every_portuguese_gets_the_brazilian_text() {
        for tag in ["pt", "pt-BR", "pt_br", "PT-PT", "pt-AO"] {
            assert_eq!(Locale::supported(tag), Some(Locale::PtBr), "{tag}");
        }
        assert_eq!(Locale::PtBr.as_str(), "pt-BR");
    }

    #[test]
    fn every_locale_is_read_back_from_its_own_tag() {
        for locale in Locale::ALL {
            assert_eq!(Locale::supported(locale.as_str()), Some(locale));
        }
    }

    #[test]
    fn negotiation_honours_q_values_and_falls_back_to_english() {
        let cases = [
            ("zh-CN,zh;q=0.9,en;q=0.8", Locale::ZhCn),
            ("en-US,zh;q=0.5", Locale::En),
            ("it-IT, zh-Hans;q=0.3", Locale::ZhCn),
            // Traditional Chinese is not Simplified: the next accepted language, or English.
            ("zh-TW, zh-CN;q=0.5", Locale::ZhCn),
            ("it-IT, zh-TW;q=0.3", Locale::En),
            ("de", Locale::De),
            ("de-CH,de;q=0.9,en;q=0.8", Locale::De),
            ("en;q=0.5, ja;q=0.8", Locale::Ja),
            ("ko-KR, ja-JP;q=0.6, en-US;q=0.4", Locale::Ja),
            ("it, fr;q=0.9, de;q=0.7", Locale::Fr),
            ("es-419, es;q=0.9, en;q=0.5", Locale::Es),
            ("pt-PT, pt;q=0.9, en;q=0.8", Locale::PtBr),
            ("en-GB;q=0.8, pt-BR", Locale::PtBr),
            ("fr;q=0.5, es;q=0.5", Locale::Fr),
            ("ja;q=0, de;q=0.1", Locale::De),
            ("", Locale::En),
            ("zh;q=0, en;q=0.1", Locale::En),
        ];
        for (header, expected) in cases {
            assert_eq!(Locale::negotiate(header), expected, "{header}");
        }
    }

    #[test]
    fn what_the_api_negotiates_the_worker_maps_to_the_same_locale() {
        for header in [
            "zh-TW",
            "zh-Hant-HK, zh;q=0.2",
            "zh-SG",
            "en-AU",
            "xx",
            "es-AR",
            "fr-CH",
            "de-LI",
            "ja-JP",
            "pt-PT",
        ] {
            let negotiated = Locale::negotiate(header);
            assert_eq!(Locale::from_tag(negotiated.as_str()), negotiated);
        }
    }

    #[test]
    fn a_locale_travels_as_its_tag_and_any_tag_is_read() {
        for locale in Locale::ALL {
            let json = serde_json::to_string(&locale).expect("serialises");
            assert_eq!(json, format!("\"{}\"", locale.as_str()));
            let back: Locale = serde_json::from_str(&json).expect("deserialises");
            assert_eq!(back, locale);
        }
        // A tag this version has no templates for is read as English, not refused.
        let read: Locale = serde_json::from_str("\"it-IT\"").expect("deserialises");
        assert_eq!(read, Locale::En);
        let read: Locale = serde_json::from_str("\"pt-PT\"").expect("deserialises");
        assert_eq!(read, Locale::PtBr);
        let read: Locale = serde_json::from_str("\"zh-Hans-CN\"").expect("deserialises");
        assert_eq!(read, Locale::ZhCn);
        assert!(serde_json::from_str::<Locale>("7").is_err());
    }
}
