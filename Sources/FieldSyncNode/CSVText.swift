// Cells and lines of CSV files that people open in spreadsheets (RFC 4180, with formula neutralisation):
// the `fieldsync export` and the reports (FieldSyncReports) write through it, `fieldsync import` reads back
// with `restored`.

/// CSV cells safe to open in a spreadsheet, and RFC 4180 lines.
public enum CSVText {
    /// Characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection"): `=`, `+`,
    /// `-`, `@`, tab and carriage return.
    public static let formulaStarts: Set<Unicode.Scalar> = ["=", "+", "-", "@", "\t", "\r"]

    /// Whether `cell` is a plain decimal number (`-12`, `-0.5`, `1.5e-07`): a spreadsheet reads it as a
    /// number, never as a formula, so numeric cells keep their sign as is.
    public static func isPlainNumber(_ cell: Substring) -> Bool {
        var u = cell.unicodeScalars[...]
        if u.first == "-" { u = u.dropFirst() }
        func digits() -> Int {
            let n = u.prefix { ("0"..."9").contains($0) }.count
            u = u.dropFirst(n)
            return n
        }
        guard digits() > 0 else { return false }
        if u.first == "." {
            u = u.dropFirst()
            guard digits() > 0 else { return false }
        }
        if u.first == "e" || u.first == "E" {
            u = u.dropFirst()
            if u.first == "-" || u.first == "+" { u = u.dropFirst() }
            guard digits() > 0 else { return false }
        }
        return u.isEmpty
    }

    /// Whether the cell, after any leading single quotes, starts like a formula (and is not a number).
    public static func startsLikeFormula(_ cell: Substring) -> Bool {
        let rest = cell.drop { $0 == "'" }
        guard let first = rest.unicodeScalars.first, formulaStarts.contains(first) else { return false }
        return !isPlainNumber(rest)
    }

    /// A cell safe to open in a spreadsheet: a cell that would start a formula gets a single quote in
    /// front (OWASP's advice), and so does one that already starts with quotes before such a character,
    /// so that `restored` gives back the original exactly. Numbers are left as they are.
    public static func neutralized(_ cell: String) -> String {
        startsLikeFormula(cell[...]) ? "'" + cell : cell
    }

    /// The inverse of `neutralized`: one leading single quote is removed from a cell that starts with
    /// quotes and then a formula character. Other cells are unchanged.
    public static func restored(_ cell: String) -> String {
        cell.first == "'" && startsLikeFormula(cell[...]) ? String(cell.dropFirst()) : cell
    }

    /// One RFC 4180 line (CRLF-terminated) of cells as given (neutralise them first): a cell with a comma,
    /// a quote, a line break or a leading or trailing space is quoted.
    public static func line(_ cells: [String]) -> String {
        cells.map { c in
            guard c.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) || c.first == " " || c.last == " " else { return c }
            return "\"" + c.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }.joined(separator: ",") + "\r\n"
    }
}
