package metadata

import (
	"strings"
	"unicode"

	metadatav1 "github.com/reelway/reelway/gen/reelway/metadata/v1"
	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"
)

const (
	// maxWordRunes truncates long words, in the index and in queries alike, so that
	// neither backend meets its own limit (PostgreSQL drops lexemes over 2047 bytes).
	maxWordRunes = 64
	// maxQueryWords bounds the work one search can ask for.
	maxQueryWords = 16
)

// SearchWords splits s into the words search indexes and matches: maximal runs of Unicode
// letters and digits, lower-cased rune by rune, without accents (compatibility decomposition,
// nonspacing marks removed, recomposed, and the letters of foldLetter spelled out: "Café"
// and "cafe" are one word, as are "Łódź" and "lodz", as users expect of a search box) and
// cut to maxWordRunes. Both backends
// index the text this function produces (words joined by single spaces) rather than the
// raw fields, and queries go through it too; that is what makes SQLite FTS5 and PostgreSQL
// full-text search return the same videos for the same query, where their own tokenizers,
// stemmers and stop words would disagree.
func SearchWords(s string) []string {
	var (
		words []string
		b     strings.Builder
		n     int
	)
	flush := func() {
		if b.Len() > 0 {
			words = append(words, b.String())
			b.Reset()
		}
		n = 0
	}
	for _, r := range foldAccents(s) {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) {
			flush()
			continue
		}
		if n < maxWordRunes {
			lr := unicode.ToLower(r)
			if f, ok := foldLetter(lr); ok {
				b.WriteString(f)
			} else {
				b.WriteRune(lr)
			}
		}
		n++
	}
	flush()
	return words
}

// foldAccents removes the accents of s: NFKD, then every nonspacing mark dropped, then NFC
// so that scripts whose letters decompose into letters (Hangul) come back whole. The
// compatibility decomposition also turns ligatures ("ﬁ") and full-width forms ("ＣＡＦＥ")
// into the letters people type.
func foldAccents(s string) string {
	if isASCII(s) {
		return s
	}
	out, _, err := transform.String(transform.Chain(norm.NFKD, runes.Remove(runes.In(unicode.Mn)), norm.NFC), s)
	if err != nil {
		return s // the transformers do not fail on valid or invalid UTF-8; keep the text searchable as it is
	}
	return out
}

// foldLetter spells the lower-case Latin letters that carry their accent inside the letter
// (no decomposition removes it) the way a search box user types them: "Łódź" is found by
// "lodz", "Øresund" by "oresund", "Straße" by "strasse".
func foldLetter(r rune) (string, bool) {
	switch r {
	case 'ł':
		return "l", true
	case 'ø':
		return "o", true
	case 'đ':
		return "d", true
	case 'ħ':
		return "h", true
	case 'ı':
		return "i", true
	case 'ß':
		return "ss", true
	case 'æ':
		return "ae", true
	case 'œ':
		return "oe", true
	case 'þ':
		return "th", true
	}
	return "", false
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// searchText is the indexed text of a video: the words of its title, description and tags.
func searchText(v *metadatav1.Video) string {
	words := SearchWords(v.GetTitle())
	words = append(words, SearchWords(v.GetDescription())...)
	for _, t := range v.GetTags() {
		words = append(words, SearchWords(t)...)
	}
	return strings.Join(words, " ")
}
