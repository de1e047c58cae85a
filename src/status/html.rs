//! The status page: one server-rendered HTML document, no scripts, no
//! external assets, reloading itself. Every value shown carries a
//! `data-field` attribute naming its place in the JSON snapshot
//! (`limiters.0.queued.high`), so a program can check one against the
//! other.

use std::fmt::{Display, Write};

use super::snapshot::Status;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d2733;background:#f5f7fa}\
h1{font-size:1.3rem;margin:0 0 .2rem}h2{font-size:1rem;margin:0 0 .6rem}\
.meta{color:#5b6b7c;margin-bottom:1rem}\
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:1rem}\
section{background:#fff;border:1px solid #d8dee6;border-radius:6px;padding:.8rem 1rem}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.15rem .4rem .15rem 0;vertical-align:top}\
th{color:#5b6b7c;font-weight:normal;width:45%}\
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}\
.wide{grid-column:1/-1}code{font-size:12px}.totals{margin-bottom:.6rem}\
.events th{width:auto}.events td{padding-right:1.2rem;white-space:nowrap}";

/// Renders `status` as the page, reloading every `refresh` seconds.
pub(super) fn render(status: &Status, title: &str, refresh: u64) -> String {
    let mut page = Page::default();
    page.raw(&format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>"
    ));
    page.text(title);
    page.raw(&format!("</title><style>{STYLE}</style></head><body><h1>"));
    page.text(title);
    page.raw("</h1><div class=\"meta\">at ");
    page.field("generated_at", &status.generated_at, "");
    page.raw(&format!(
        ", reloading every {refresh} s &middot; <a href=\"?format=json\">JSON</a></div><div class=\"grid\">"
    ));
    tokens(&mut page, status);
    breakers(&mut page, status);
    limiters(&mut page, status);
    fleet(&mut page, status);
    recent(&mut page, status);
    page.raw("</div></body></html>");
    page.0
}

fn tokens(page: &mut Page, status: &Status) {
    for (i, token) in status.tokens.iter().enumerate() {
        page.open_section("Token", &token.name);
        let at = |f: &str| format!("tokens.{i}.{f}");
        let class = if token.in_hand { "ok" } else { "bad" };
        page.row("in hand", |p| {
            p.field(&at("in_hand"), yes_no(token.in_hand), class)
        });
        page.row("expires at", |p| {
            p.option(&at("expires_at"), token.expires_at.as_ref(), "")
        });
        page.row("expires in (s)", |p| {
            p.option(&at("expires_in_s"), token.expires_in_s.as_ref(), "")
        });
        page.row("refresh in (s)", |p| {
            p.option(&at("refresh_in_s"), token.refresh_in_s.as_ref(), "")
        });
        page.row("refreshing", |p| {
            p.field(&at("refreshing"), yes_no(token.refreshing), "")
        });
        page.row("tokens stored", |p| {
            p.field(&at("refresh_count"), token.refresh_count, "")
        });
        let class = if token.consecutive_failures > 0 {
            "bad"
        } else {
            ""
        };
        page.row("failed refreshes in a row", |p| {
            p.field(
                &at("consecutive_failures"),
                token.consecutive_failures,
                class,
            )
        });
        page.close_section();
    }
}

fn breakers(page: &mut Page, status: &Status) {
    for (i, breaker) in status.breakers.iter().enumerate() {
        page.open_section("Circuit breaker", &breaker.name);
        let at = |f: &str| format!("breakers.{i}.{f}");
        let class = match breaker.state.as_str() {
            "closed" => "ok",
            "half_open" => "warn",
            _ => "bad",
        };
        page.row("state", |p| p.field(&at("state"), &breaker.state, class));
        page.row("next probe in (s)", |p| {
            p.option(&at("next_probe_in_s"), breaker.next_probe_in_s.as_ref(), "")
        });
        page.row("successes", |p| {
            p.field(&at("successes"), breaker.successes, "")
        });
        page.row("failures", |p| {
            p.field(&at("failures"), breaker.failures, "")
        });
        page.row("rejected", |p| {
            p.field(&at("rejected"), breaker.rejected, "")
        });
        page.row("trips", |p| p.field(&at("trips"), breaker.trips, ""));
        page.close_section();
    }
}

fn limiters(page: &mut Page, status: &Status) {
    for (i, limiter) in status.limiters.iter().enumerate() {
        page.open_section("Limiter", &limiter.name);
        let at = |f: &str| format!("limiters.{i}.{f}");
        page.row("in flight", |p| {
            p.field(&at("in_flight"), limiter.in_flight, "")
        });
        page.row("permits free", |p| {
            p.field(&at("available"), limiter.available, "")
        });
        let queued = limiter.queued;
        for (label, name, n) in [
            ("queued, high", "high", queued.high),
            ("queued, normal", "normal", queued.normal),
            ("queued, low", "low", queued.low),
        ] {
            let class = if n > 0 { "warn" } else { "" };
            page.row(label, |p| p.field(&at(&format!("queued.{name}")), n, class));
        }
        let gate = &limiter.gate;
        let (shown, class) = if gate.closed {
            ("closed", "bad")
        } else {
            ("open", "ok")
        };
        page.row("rate gate", |p| p.field(&at("gate.closed"), shown, class));
        page.row("reopens in (s)", |p| {
            p.option(&at("gate.reopens_in_s"), gate.reopens_in_s.as_ref(), "")
        });
        page.row("closed by", |p| {
            p.option(&at("gate.reason"), gate.reason.as_ref(), "")
        });
        let exhausted = limiter.quota_exhausted_for_s.as_ref();
        page.row("quota exhausted, resets in (s)", |p| {
            let class = if exhausted.is_some() { "bad" } else { "" };
            p.option(&at("quota_exhausted_for_s"), exhausted, class)
        });
        match &limiter.pacing {
            Some(pacing) => {
                page.row("pacing (requests/s)", |p| {
                    p.field(&at("pacing.per_second"), pacing.per_second, "")
                });
                page.row("pacing source", |p| {
                    p.field(&at("pacing.source"), &pacing.source, "")
                });
            }
            None => page.row("pacing", |p| p.field(&at("pacing"), "off", "")),
        }
        page.close_section();
    }
}

fn fleet(page: &mut Page, status: &Status) {
    let Some(fleet) = &status.fleet else {
        return;
    };
    page.open_section("Fleet", &fleet.name);
    let class = if fleet.degraded.is_empty() {
        "ok"
    } else {
        "bad"
    };
    page.row("state", |p| p.field("fleet.state", &fleet.state, class));
    if let Some(member) = &fleet.member {
        page.row("this member", |p| p.field("fleet.member", member, ""));
        let members = fleet.members.as_ref();
        page.row("members alive", |p| {
            p.option("fleet.members.len", members.map(Vec::len).as_ref(), "");
            for (i, name) in members.into_iter().flatten().enumerate() {
                p.raw(if i == 0 { ": " } else { ", " });
                p.field(&format!("fleet.members.{i}"), name, "");
            }
        });
    }
    for (i, degraded) in fleet.degraded.iter().enumerate() {
        page.row(&format!("{} fell back", degraded.component), |p| {
            p.field(
                &format!("fleet.degraded.{i}.reason"),
                &degraded.reason,
                "bad",
            );
            p.raw(" since ");
            p.field(&format!("fleet.degraded.{i}.since"), &degraded.since, "");
        });
    }
    page.close_section();
}

fn recent(page: &mut Page, status: &Status) {
    let recent = &status.recent;
    page.raw(
        "<section class=\"wide\"><h2>Recent retries and sheds</h2><div class=\"totals\">retries ",
    );
    page.field("recent.retries_total", recent.retries_total, "");
    page.raw(" &middot; sheds ");
    page.field("recent.sheds_total", recent.sheds_total, "");
    page.raw(" (since start)</div><table class=\"events\"><tr><th>when</th><th>event</th><th>after attempt</th><th>detail</th><th>correlation id</th></tr>");
    for event in &recent.events {
        page.raw("<tr><td>");
        page.text(&event.ts);
        page.raw("</td><td>");
        page.text(&event.event);
        page.raw("</td><td>");
        if let Some(attempt) = event.attempt {
            page.text(&attempt.to_string());
        }
        page.raw("</td><td>");
        page.text(&event.detail);
        page.raw("</td><td><code>");
        page.text(&event.correlation_id);
        page.raw("</code></td></tr>");
    }
    page.raw("</table></section>");
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The document being written, every text escaped.
#[derive(Default)]
struct Page(String);

impl Page {
    fn raw(&mut self, html: &str) {
        self.0.push_str(html);
    }

    fn text(&mut self, text: &str) {
        for c in text.chars() {
            match c {
                '&' => self.0.push_str("&amp;"),
                '<' => self.0.push_str("&lt;"),
                '>' => self.0.push_str("&gt;"),
                '"' => self.0.push_str("&quot;"),
                '\'' => self.0.push_str("&#39;"),
                c => self.0.push(c),
            }
        }
    }

    fn open_section(&mut self, kind: &str, name: &str) {
        self.raw("<section><h2>");
        self.text(kind);
        self.raw(" &middot; ");
        self.text(name);
        self.raw("</h2><table>");
    }

    fn close_section(&mut self) {
        self.raw("</table></section>");
    }

    fn row(&mut self, label: &str, value: impl FnOnce(&mut Self)) {
        self.raw("<tr><th>");
        self.text(label);
        self.raw("</th><td>");
        value(self);
        self.raw("</td></tr>");
    }

    /// A value, with its place in the JSON snapshot.
    fn field(&mut self, name: &str, value: impl Display, class: &str) {
        let _ = write!(self.0, "<span data-field=\"{name}\"");
        if !class.is_empty() {
            let _ = write!(self.0, " class=\"{class}\"");
        }
        self.raw(">");
        self.text(&value.to_string());
        self.raw("</span>");
    }

    /// A value that may be absent (shown as a dash).
    fn option(&mut self, name: &str, value: Option<&impl Display>, class: &str) {
        match value {
            Some(value) => self.field(name, value, class),
            None => self.field(name, "-", class),
        }
    }
}
