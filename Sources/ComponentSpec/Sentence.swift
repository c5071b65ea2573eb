/// A message with every run of more than 200 non-space characters cut to its first 80 and last
/// 20: messages quote what an input said (a node id, a class type, a URL), and a 1 MiB id made a
/// 1 MiB "sentence" (found by bench/fuzz).
package func clippedSentence(_ text: String) -> String {
    guard text.count > 200 else { return text }
    return text.split(separator: " ", omittingEmptySubsequences: false).map { word in
        word.count > 200 ? String(word.prefix(80)) + "…" + String(word.suffix(20)) : String(word)
    }.joined(separator: " ")
}
