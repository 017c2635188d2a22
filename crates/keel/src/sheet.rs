//! Printable password sheets: an A4 PDF of cards (name, login, password), ten to a page, with cut
//! lines, in PDF's built-in fonts (nothing to embed): Helvetica for names, Courier Bold for what
//! must be typed — and generated passwords contain no look-alike characters anyway.

use pdf_writer::{Content, Name, Pdf, Rect, Ref, Str};

/// One card.
pub struct Card<'a> {
    pub name: &'a str,
    pub login: &'a str,
    pub password: &'a str,
}

const PAGE_W: f32 = 595.0;
const PAGE_H: f32 = 842.0;
const COLS: usize = 2;
const ROWS: usize = 5;

/// The PDF bytes for `cards`, in the order given.
pub fn pdf(cards: &[Card<'_>]) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let (catalog, tree, sans, mono) = (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4));
    let pages: Vec<&[Card<'_>]> = cards.chunks(COLS * ROWS).collect();
    let page_ids: Vec<Ref> = (0..pages.len().max(1)).map(|i| Ref::new(10 + 2 * i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(page_ids.iter().copied())
        .count(page_ids.len() as i32);
    pdf.type1_font(sans)
        .base_font(Name(b"Helvetica"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(mono)
        .base_font(Name(b"Courier-Bold"))
        .encoding_predefined(Name(b"WinAnsiEncoding"));
    for (i, id) in page_ids.iter().enumerate() {
        let content_id = Ref::new(id.get() + 1);
        let mut page = pdf.page(*id);
        page.parent(tree)
            .media_box(Rect::new(0.0, 0.0, PAGE_W, PAGE_H))
            .contents(content_id);
        let mut res = page.resources();
        res.fonts().pair(Name(b"F1"), sans).pair(Name(b"F2"), mono);
        drop(res);
        drop(page);
        let content = page_content(pages.get(i).copied().unwrap_or(&[]));
        pdf.stream(content_id, &content);
    }
    pdf.finish()
}

fn page_content(cards: &[Card<'_>]) -> Vec<u8> {
    let (w, h) = (PAGE_W / COLS as f32, PAGE_H / ROWS as f32);
    let mut c = Content::new();
    // Cut lines between the cards, dashed.
    c.set_line_width(0.5).set_dash_pattern([4.0, 4.0], 0.0);
    for col in 1..COLS {
        c.move_to(w * col as f32, 0.0).line_to(w * col as f32, PAGE_H);
    }
    for row in 1..ROWS {
        c.move_to(0.0, h * row as f32).line_to(PAGE_W, h * row as f32);
    }
    c.stroke();
    for (i, card) in cards.iter().enumerate() {
        let (x, top) = (w * (i % COLS) as f32 + 24.0, PAGE_H - h * (i / COLS) as f32);
        text(&mut c, b"F1", 13.0, x, top - 40.0, card.name);
        text(&mut c, b"F1", 10.0, x, top - 75.0, "login");
        text(&mut c, b"F2", 20.0, x + 62.0, top - 77.0, card.login);
        text(&mut c, b"F1", 10.0, x, top - 115.0, "password");
        text(&mut c, b"F2", 20.0, x + 62.0, top - 117.0, card.password);
    }
    c.finish().to_vec()
}

fn text(c: &mut Content, font: &[u8], size: f32, x: f32, y: f32, s: &str) {
    let bytes = win_ansi(s);
    c.begin_text()
        .set_font(Name(font), size)
        .next_line(x, y)
        .show(Str(&bytes))
        .end_text();
}

/// Text in WinAnsiEncoding (Latin-1 for the accented letters of names); other characters as '?'.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars()
        .map(|ch| {
            u8::try_from(u32::from(ch))
                .ok()
                .filter(|b| *b < 0x80 || *b >= 0xA0)
                .unwrap_or(b'?')
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pdf_with_a_page_per_ten_cards() {
        let cards: Vec<Card<'_>> = (0..11)
            .map(|_| Card {
                name: "Élodie Müller",
                login: "emuller",
                password: "Ab3def7h",
            })
            .collect();
        let bytes = pdf(&cards);
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(
            String::from_utf8_lossy(&bytes).contains("/Count 2"),
            "two pages for eleven cards"
        );
        assert_eq!(win_ansi("é李"), [0xE9, b'?']);
    }
}
