//! The HTML rendering of an issued document (self-contained, printable, every value escaped).

use std::fmt::Write;

use super::{InvoiceDocument, Party};

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn party(title: &str, p: &Party) -> String {
    let mut s = format!(
        "<div class=\"party\"><h2>{}</h2><p><strong>{}</strong>",
        esc(title),
        esc(&p.name)
    );
    for line in p.address.iter().flat_map(|a| a.lines()) {
        let _ = write!(s, "<br>{}", esc(line));
    }
    if let Some(email) = &p.email {
        let _ = write!(s, "<br>{}", esc(email));
    }
    if let Some(tax) = &p.tax_id {
        let _ = write!(s, "<br>Tax ID: {}", esc(tax));
    }
    s.push_str("</p></div>");
    s
}

pub fn title(doc: &InvoiceDocument) -> &'static str {
    if doc.kind == "credit_note" {
        "Credit note"
    } else {
        "Invoice"
    }
}

pub fn render(doc: &InvoiceDocument) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} {n}</title>\
         <style>body{{font-family:sans-serif;max-width:46em;margin:2em auto}}\
         table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ccc;padding:.4em;text-align:left}}\
         .num{{text-align:right}}.party{{display:inline-block;vertical-align:top;width:48%}}</style></head><body>\
         <h1>{t} {n}</h1><p>Issued {issued}</p>",
        t = title(doc),
        n = esc(&doc.number),
        issued = doc.issued_at.format("%Y-%m-%d %H:%M UTC"),
    );
    if let Some(c) = &doc.corrects {
        let _ = write!(s, "<p>Corrects invoice {}</p>", esc(c));
    }
    s.push_str(&party("Seller", &doc.seller));
    s.push_str(&party("Buyer", &doc.buyer));
    s.push_str(
        "<table><thead><tr><th>Description</th><th class=\"num\">Credits</th>\
         <th class=\"num\">Unit price (USD)</th><th class=\"num\">Amount (USD)</th></tr></thead><tbody>",
    );
    for l in &doc.lines {
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&l.description),
            esc(&l.credits),
            esc(&l.unit_price_usd),
            esc(&l.amount_usd)
        );
    }
    let _ = write!(
        s,
        "</tbody></table><table><tr><td>Subtotal</td><td class=\"num\">{} USD</td></tr>\
         <tr><td>Tax ({})</td><td class=\"num\">{} USD</td></tr>\
         <tr><th>Total</th><th class=\"num\">{} USD</th></tr></table>",
        esc(&doc.subtotal_usd),
        esc(&tax_label(&doc.tax_rate)),
        esc(&doc.tax_usd),
        esc(&doc.total_usd)
    );
    let _ = write!(s, "<p>Payment method: {}", esc(&doc.payment_method));
    if let Some(r) = &doc.payment_reference {
        let _ = write!(s, " (reference {})", esc(r));
    }
    s.push_str("</p>");
    if let Some(n) = &doc.note {
        let _ = write!(s, "<p>Note: {}</p>", esc(n));
    }
    s.push_str("</body></html>\n");
    s
}

/// `0` -> "none"; `0.2` -> "20%".
pub fn tax_label(rate: &str) -> String {
    use std::str::FromStr;
    match rust_decimal::Decimal::from_str(rate) {
        Ok(r) if r.is_zero() => "none".to_owned(),
        Ok(r) => format!("{}%", (r * rust_decimal::Decimal::ONE_HUNDRED).normalize()),
        Err(_) => rate.to_owned(),
    }
}
