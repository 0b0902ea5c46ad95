//! The report model as one self-contained HTML page: inline CSS, inline vanilla JS that draws
//! every plot itself, and the data as one JSON blob the script reads. Nothing is fetched.
//!
//! Injection safety: the only sweep text placed in HTML markup is the title, escaped here; the
//! JSON blob has every `<`, `>` and `&` written as `\u00XX` (they occur only inside JSON strings),
//! so no `</script>` or comment opener can end the blob early; the script builds the page with
//! `textContent`, never `innerHTML`, from that data.

use super::model::Report;

const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

/// The whole page.
pub fn render(report: &Report) -> String {
    let data = embed_json(&serde_json::to_string(report).unwrap_or_else(|_| "null".into()));
    let title = escape_html(&format!("hsm report: {}", report.summary.sweep_id));
    let mut page = String::with_capacity(data.len() + CSS.len() + JS.len() + 4096);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    // No network, whatever the data says: the page may only use what it carries.
    page.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n",
    );
    page.push_str("<title>");
    page.push_str(&title);
    page.push_str("</title>\n<style>\n");
    page.push_str(CSS);
    page.push_str("</style>\n</head>\n<body data-rendered=\"no\">\n");
    page.push_str("<header><h1>");
    page.push_str(&title);
    page.push_str("</h1><div id=\"subtitle\"></div></header>\n");
    page.push_str(
        "<noscript><p class=\"note\">This report draws its plots and tables with JavaScript; \
         enable it to see them. The data is in the <code>report-data</code> script element.\
         </p></noscript>\n<div id=\"js-errors\" hidden></div>\n<main id=\"main\"></main>\n",
    );
    page.push_str("<script type=\"application/json\" id=\"report-data\">");
    page.push_str(&data);
    page.push_str("</script>\n<script>\n");
    page.push_str(JS);
    page.push_str("</script>\n</body>\n</html>\n");
    page
}

/// JSON that can sit inside a `<script>` element: `<`, `>` and `&` occur in JSON only inside
/// strings, where `\u003c` etc. mean the same characters. U+2028/2029 are escaped too, for any
/// reader that evaluates the blob as script.
pub fn embed_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Text for HTML element content or a quoted attribute.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::TaskStatus;
    use crate::core::value::{Params, Value};
    use crate::report::model::{build, task, ReportInput, LIMITS};
    use std::collections::{BTreeMap, HashMap};

    const HOSTILE: &str = "</script><script>alert(1)</script><!-- & \u{2028}";

    fn hostile_report() -> String {
        let params: Params = [("x".to_string(), Value::Str(HOSTILE.into()))]
            .into_iter()
            .collect();
        let mut failed = task(1, TaskStatus::Failed, params);
        failed.reason = Some(HOSTILE.into());
        let input = ReportInput {
            sweep_id: format!("id{HOSTILE}"),
            generated_ms: 0,
            task_width: 3,
            tasks: vec![failed],
            metrics: BTreeMap::from([(1, BTreeMap::from([(HOSTILE.to_string(), 1.0)]))]),
            tails: HashMap::from([(1, HOSTILE.to_string())]),
            command: Some(HOSTILE.into()),
            ..ReportInput::default()
        };
        render(&build(&input, &LIMITS))
    }

    #[test]
    fn sweep_text_cannot_end_the_data_or_open_markup() {
        let page = hostile_report();
        // The page's own script elements only: the opening data tag, then the code's.
        assert_eq!(page.matches("<script").count(), 2, "{page}");
        assert_eq!(page.matches("</script>").count(), 2);
        assert!(!page.contains("<!--"));
        assert!(page.contains("<title>hsm report: id&lt;/script&gt;&lt;script&gt;"));
        let start = page.find("id=\"report-data\">").unwrap() + "id=\"report-data\">".len();
        let end = start + page[start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&page[start..end]).unwrap();
        // A stderr tail is shown as it was written (the group's signature is normalised).
        assert_eq!(
            data["errors"][0]["tail"], HOSTILE,
            "the text survives intact"
        );
        assert_eq!(data["params"][0]["cats"][0], HOSTILE);
    }

    #[test]
    fn the_page_needs_nothing_from_the_network() {
        let page = hostile_report();
        for outside in ["http://", "https://", "//cdn", "@import", "url("] {
            assert!(!page.contains(outside), "{outside} in the page");
        }
        assert!(page.contains("default-src 'none'"));
    }

    #[test]
    fn the_script_never_puts_data_into_markup() {
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!JS.contains(forbidden), "{forbidden} in report.js");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_html("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
        assert_eq!(embed_json("\"</s>&\""), "\"\\u003c/s\\u003e\\u0026\"");
    }
}
