// Marks the report sentences that share a content word (compared by its first 5 letters) with the query.

const STOP = new Set(("a an and are as at be both by for from in is it its no not of on or the there this to " +
  "was were with without seen observed noted detected left right").split(" "));

function stems(text) {
  return new Set((text.toLowerCase().match(/[a-z]{3,}/g) || []).filter((w) => !STOP.has(w)).map((w) => w.slice(0, 5)));
}

export function highlightSentences(text, query) {
  const wanted = stems(query || "");
  const parts = (text || "").match(/[^.!?]+[.!?]*\s*/g) || [];
  return parts.map((sentence) => {
    const hit = [...stems(sentence)].some((s) => wanted.has(s));
    if (!hit) return document.createTextNode(sentence);
    const mark = document.createElement("mark");
    mark.textContent = sentence;
    return mark;
  });
}
