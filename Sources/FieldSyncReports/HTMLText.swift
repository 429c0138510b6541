// Escaping for HTML and SVG: every text that comes from a record is hostile (field devices write it), so
// every text the reports put in markup goes through `HTMLText.escape`, in element content and in
// attribute values alike.

/// HTML and XML escaping.
public enum HTMLText {
    /// `text` safe inside an element or a quoted attribute (HTML and SVG/XML): `&`, `<`, `>`, `"` and `'`
    /// become character references; control characters other than tab, line feed and carriage return
    /// (which HTML forbids and XML 1.0 cannot hold at all), and unpaired surrogates' replacement, become
    /// U+FFFD, so that hostile text shows as text and can never end the element, the attribute or the document.
    ///
    /// ```swift
    /// HTMLText.escape("<script>alert(1)</script>")  // "&lt;script&gt;alert(1)&lt;/script&gt;"
    /// ```
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for u in text.unicodeScalars {
            switch u {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\t", "\n", "\r": out.unicodeScalars.append(u)
            case _ where u.value < 0x20 || (0x7F...0x9F).contains(u.value) || u.value == 0xFFFE || u.value == 0xFFFF
                || u.value == 0x2028 || u.value == 0x2029:  // line and paragraph separators end a line in script
                out += "\u{FFFD}"
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}
