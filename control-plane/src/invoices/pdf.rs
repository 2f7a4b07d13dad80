//! A hand-written one-page PDF 1.4 of an issued document: the standard Type1 fonts Helvetica and
//! Helvetica-Bold (no embedding, WinAnsiEncoding) and an uncompressed content stream, so that the
//! text is extractable by any PDF reader or text extractor. No dependency.

use std::fmt::Write;

use super::html::{tax_label, title};
use super::{InvoiceDocument, Party};

const PAGE_WIDTH: u32 = 595;
const PAGE_HEIGHT: u32 = 842;
const MARGIN_BOTTOM: i32 = 50;
const WRAP: usize = 95;

/// One piece of text at a position. `bold` picks Helvetica-Bold.
struct Text {
    x: i32,
    y: i32,
    size: u32,
    bold: bool,
    text: String,
}

/// A PDF literal string: `(`, `)` and `\` escaped; Latin-1 as octal in WinAnsiEncoding (which
/// agrees with Latin-1 from 0xA0 up); anything else becomes `?`.
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('(');
    for c in s.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            '\u{a0}'..='\u{ff}' => {
                let _ = write!(out, "\\{:03o}", u32::from(c));
            }
            '\u{20ac}' => out.push_str("\\200"),
            _ => out.push('?'),
        }
    }
    out.push(')');
    out
}

fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

struct Layout {
    items: Vec<Text>,
}

impl Layout {
    fn put(&mut self, x: i32, y: i32, size: u32, bold: bool, text: impl Into<String>) {
        if y >= MARGIN_BOTTOM {
            self.items.push(Text {
                x,
                y,
                size,
                bold,
                text: text.into(),
            });
        }
    }

    /// A party block starting at (x, y); returns the y below it.
    fn party(&mut self, x: i32, mut y: i32, heading: &str, p: &Party) -> i32 {
        self.put(x, y, 11, true, heading);
        y -= 15;
        self.put(x, y, 10, false, p.name.clone());
        for line in p.address.iter().flat_map(|a| a.lines()) {
            y -= 13;
            self.put(x, y, 10, false, line);
        }
        if let Some(e) = &p.email {
            y -= 13;
            self.put(x, y, 10, false, e.clone());
        }
        if let Some(t) = &p.tax_id {
            y -= 13;
            self.put(x, y, 10, false, format!("Tax ID: {t}"));
        }
        y
    }
}

fn layout(doc: &InvoiceDocument) -> Layout {
    let mut l = Layout { items: Vec::new() };
    let mut y = 790;
    l.put(50, y, 18, true, format!("{} {}", title(doc), doc.number));
    y -= 20;
    l.put(
        50,
        y,
        10,
        false,
        format!("Issued {}", doc.issued_at.format("%Y-%m-%d %H:%M UTC")),
    );
    if let Some(c) = &doc.corrects {
        y -= 14;
        l.put(50, y, 10, false, format!("Corrects invoice {c}"));
    }
    y -= 30;
    let below_seller = l.party(50, y, "Seller", &doc.seller);
    let below_buyer = l.party(320, y, "Buyer", &doc.buyer);
    y = below_seller.min(below_buyer) - 30;
    for (x, h) in [
        (50, "Description"),
        (290, "Credits"),
        (380, "Unit price (USD)"),
        (480, "Amount (USD)"),
    ] {
        l.put(x, y, 10, true, h);
    }
    for line in &doc.lines {
        y -= 16;
        l.put(50, y, 10, false, line.description.clone());
        l.put(290, y, 10, false, line.credits.clone());
        l.put(380, y, 10, false, line.unit_price_usd.clone());
        l.put(480, y, 10, false, line.amount_usd.clone());
    }
    y -= 30;
    l.put(380, y, 10, false, "Subtotal");
    l.put(480, y, 10, false, format!("{} USD", doc.subtotal_usd));
    y -= 14;
    l.put(380, y, 10, false, format!("Tax ({})", tax_label(&doc.tax_rate)));
    l.put(480, y, 10, false, format!("{} USD", doc.tax_usd));
    y -= 16;
    l.put(380, y, 11, true, "Total");
    l.put(480, y, 11, true, format!("{} USD", doc.total_usd));
    y -= 30;
    let mut payment = format!("Payment method: {}", doc.payment_method);
    if let Some(r) = &doc.payment_reference {
        let _ = write!(payment, " (reference {r})");
    }
    for line in wrap(&payment, WRAP) {
        l.put(50, y, 10, false, line);
        y -= 13;
    }
    if let Some(n) = &doc.note {
        for line in wrap(&format!("Note: {n}"), WRAP) {
            l.put(50, y, 10, false, line);
            y -= 13;
        }
    }
    l
}

fn content_stream(l: &Layout) -> String {
    let mut s = String::new();
    for t in &l.items {
        let font = if t.bold { "F2" } else { "F1" };
        let _ = writeln!(
            s,
            "BT /{font} {} Tf 1 0 0 1 {} {} Tm {} Tj ET",
            t.size,
            t.x,
            t.y,
            literal(&t.text)
        );
    }
    s
}

/// The PDF bytes.
pub fn render(doc: &InvoiceDocument) -> Vec<u8> {
    let content = content_stream(&layout(doc));
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
             /Resources << /Font << /F1 4 0 R /F2 5 0 R >> >> /Contents 6 0 R >>"
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}endstream", content.len()),
        format!(
            "<< /Title {} /Producer (ClaudeStore control plane) >>",
            literal(&format!("{} {}", title(doc), doc.number))
        ),
    ];
    let mut out = String::from("%PDF-1.4\n");
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        let _ = write!(out, "{} 0 obj\n{body}\nendobj\n", i + 1);
    }
    let xref = out.len();
    let _ = write!(out, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for o in offsets {
        let _ = writeln!(out, "{o:010} 00000 n ");
    }
    let _ = write!(
        out,
        "trailer\n<< /Size {} /Root 1 0 R /Info 7 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn literals_escape_delimiters_and_encode_latin1() {
        assert_eq!(literal("a(b)\\c"), "(a\\(b\\)\\\\c)");
        assert_eq!(literal("Müller €5 ✓"), "(M\\374ller \\2005 ?)");
    }

    fn sample() -> InvoiceDocument {
        let party = |name: &str| Party {
            name: name.into(),
            address: Some("1 Test Street\n10115 Berlin".into()),
            tax_id: Some("DE123".into()),
            account_id: None,
            email: None,
        };
        InvoiceDocument {
            number: "INV-2026-000042".into(),
            kind: "invoice".into(),
            issued_at: chrono::Utc::now(),
            purchase_id: uuid::Uuid::nil(),
            corrects: None,
            seller: party("Seller (Ltd)"),
            buyer: party("Buyer"),
            lines: vec![super::super::InvoiceLine {
                description: "105,000 credits".into(),
                credits: "105000".into(),
                unit_price_usd: "0.00476".into(),
                amount_usd: "500.00".into(),
            }],
            currency: "USD".into(),
            subtotal_usd: "500.00".into(),
            tax_rate: "0".into(),
            tax_usd: "0.00".into(),
            total_usd: "500.00".into(),
            payment_method: "card".into(),
            payment_reference: Some("cs_test_1".into()),
            note: None,
        }
    }

    #[test]
    fn the_cross_reference_table_points_at_every_object() {
        let pdf = render(&sample());
        let text = String::from_utf8(pdf).unwrap();
        let start: usize = text
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(text[start..].starts_with("xref\n0 8\n"));
        let entries: Vec<usize> = text[start..]
            .lines()
            .skip(3)
            .take(7)
            .map(|l| l[..10].parse().unwrap())
            .collect();
        for (i, offset) in entries.into_iter().enumerate() {
            assert!(
                text[offset..].starts_with(&format!("{} 0 obj\n", i + 1)),
                "object {}",
                i + 1
            );
        }
        let stream = text.split(">>\nstream\n").nth(1).unwrap();
        let declared: usize = text
            .split("/Length ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(stream.find("endstream"), Some(declared));
    }

    #[test]
    fn long_text_wraps_on_words() {
        let lines = wrap("one two three four", 9);
        assert_eq!(lines, ["one two", "three", "four"]);
    }
}
