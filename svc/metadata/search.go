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
		// Spacing marks (the vowel signs of Devanagari, Tamil, Bengali…) belong to their
		// word: without them "हाथी" would be the words "ह" and "थ".
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.In(r, unicode.Mc, unicode.Mn) {
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

// foldAccents removes the accents of s: NFKD, then every nonspacing mark and format
// character dropped, then NFC
// so that scripts whose letters decompose into letters (Hangul) come back whole. The
// compatibility decomposition also turns ligatures ("ﬁ") and full-width forms ("ＣＡＦＥ")
// into the letters people type.
func foldAccents(s string) string {
	if isASCII(s) {
		return s
	}
	// Format characters (soft hyphens, zero-width spaces and joiners) are invisible: a
	// word written with one is the word without it.
	out, _, err := transform.String(transform.Chain(norm.NFKD, runes.Remove(runes.Predicate(foldedMark)), norm.NFC), s)
	if err != nil {
		return s // the transformers do not fail on valid or invalid UTF-8; keep the text searchable as it is
	}
	return out
}

// foldedMark says whether r is dropped from search text: an accent of the Latin, Greek
// and Cyrillic scripts (the combining diacritical blocks), a Hebrew or Arabic vowel point
// (people search without them), or an invisible format character (soft hyphen, zero-width
// space or joiner). Other marks are part of their letters and stay: the vowel signs of
// Devanagari or Thai, the voicing mark of Japanese kana ("が" is not "か").
func foldedMark(r rune) bool {
	if unicode.Is(unicode.Cf, r) {
		return true
	}
	if !unicode.Is(unicode.Mn, r) {
		return false
	}
	switch {
	case r >= 0x0300 && r <= 0x036F, r >= 0x1AB0 && r <= 0x1AFF, r >= 0x1DC0 && r <= 0x1DFF,
		r >= 0x20D0 && r <= 0x20FF, r >= 0xFE20 && r <= 0xFE2F:
		return true
	case r >= 0x0591 && r <= 0x05C7: // Hebrew points
		return true
	case r >= 0x0610 && r <= 0x061A, r >= 0x064B && r <= 0x065F, r == 0x0670, r >= 0x06D6 && r <= 0x06ED: // Arabic marks
		return true
	}
	return false
}

// foldLetter spells the lower-case Latin letters that carry their accent inside the letter
// (no decomposition removes it) the way a search box user types them: "Łódź" is found by
// "lodz", "Øresund" by "oresund", "Straße" by "strasse".
func foldLetter(r rune) (string, bool) {
	switch r {
	case 'ς':
		// Final sigma is σ at the end of a word; case folding makes them one letter.
		return "σ", true
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
