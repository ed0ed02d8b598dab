package transport

import "bytes"

// scanner reads a frame as it arrives, chunk by chunk, before anything
// decodes it: it counts the JSON values the frame holds and how deep they
// nest, and notes the frame's top-level id and whether it has a method (a
// request or a notification) or a result or an error (an answer). What a
// frame costs once decoded depends far more on its values than on its
// bytes (a small key costs the SDK's decoders about 130 bytes of live
// memory and 3 µs), so counting them is how a conn bounds that cost before
// it is paid; and a frame refused half-way can still be answered, by its
// id, once its end is found.
//
// It does not validate JSON: the decoder does that later. It only needs to
// know, for any bytes, where strings start and end (so that brackets and
// quotes inside them do not count) and which keys are at the top level.
type scanner struct {
	values, depth int
	deepest       int // the deepest nesting seen

	inString, escaped bool
	// valueNext: the last significant byte was '{', '[', ',', ':' or none
	// yet, so the next byte that is not a space starts a value.
	valueNext bool
	inScalar  bool // inside a number, true, false or null

	// The top-level object.
	keyNext   bool   // a string at depth 1 here is a key
	inKey     bool   // reading a top-level key
	key       []byte // the top-level key being read or just read (a short one)
	keyLong   bool   // the key was longer than any interesting one, or escaped
	idNext    bool   // the next value is the top-level id
	inID      bool   // reading the top-level id
	id        []byte // its raw text, as sent
	idLong    bool   // longer than maxIDText: not kept
	method    bool   // a top-level "method" key was seen
	response  bool   // a top-level "result" or "error" key was seen
	nextQuote int    // within the current chunk: index of the next '"' at or after the scan position, or -1
}

// maxIDText bounds the raw id a scanner keeps: an id longer than this is
// not kept, and a frame refused half-way with such an id is not answered.
const maxIDText = 256

func newScanner() scanner { return scanner{valueNext: true} }

// reset makes s ready for the next frame, keeping its buffers.
func (s *scanner) reset() {
	key, id := s.key[:0], s.id[:0]
	*s = scanner{valueNext: true, key: key, id: id}
}

// feed scans the next bytes of the frame.
func (s *scanner) feed(b []byte) {
	s.nextQuote = -2 // unknown
	for i := 0; i < len(b); {
		if s.inString {
			i = s.string(b, i)
			continue
		}
		c := b[i]
		if s.inScalar {
			switch c {
			case ' ', '\t', '\r', '\n', ',', ':', '}', ']', '"', '{', '[':
				s.inScalar = false
				s.inID = false
			default:
				if s.inID {
					s.keepID(b[i : i+1])
				}
				i++
				continue
			}
		}
		switch c {
		case ' ', '\t', '\r', '\n':
		case '"':
			s.startValue()
			s.inString = true
			switch {
			case s.depth == 1 && s.keyNext:
				s.keyNext = false
				s.inKey = true
				s.key = s.key[:0]
				s.keyLong = false
			case s.idNext:
				s.idNext = false
				s.inID = true
				s.keepID(b[i : i+1])
			}
		case '{', '[':
			s.startValue()
			s.idNext = false // an object or array is no id
			s.depth++
			s.deepest = max(s.deepest, s.depth)
			s.valueNext = true
			s.keyNext = c == '{' && s.depth == 1
		case '}', ']':
			if s.depth > 0 {
				s.depth--
			}
			s.valueNext = false
			s.idNext = false
		case ',':
			s.valueNext = true
			s.keyNext = s.depth == 1
			s.idNext = false
		case ':':
			s.valueNext = true
			if s.depth == 1 && !s.keyLong {
				switch string(s.key) {
				case "id":
					s.idNext = true
					s.id = s.id[:0]
					s.idLong = false
				case "method":
					s.method = true
				case "result", "error":
					s.response = true
				}
				s.key = s.key[:0]
			}
		default:
			// A number, true, false or null (or garbage, which the
			// decoder refuses later).
			s.startValue()
			s.inScalar = true
			if s.idNext {
				s.idNext = false
				s.inID = true
				s.keepID(b[i : i+1])
			}
		}
		i++
	}
}

// startValue counts a value that starts here.
func (s *scanner) startValue() {
	if s.valueNext || s.depth == 0 {
		s.values++
	}
	s.valueNext = false
}

// string scans inside a string from b[i] and returns where it stopped: after
// the string's closing quote, after an escape, or at the end of b. Long runs
// without quotes or backslashes are skipped with IndexByte; the position of
// the next quote is kept, so that a long string full of escapes is not
// searched again and again.
func (s *scanner) string(b []byte, i int) int {
	if s.escaped {
		s.escaped = false
		s.keep(b[i : i+1])
		return i + 1
	}
	if s.nextQuote < i && s.nextQuote != -1 {
		if q := bytes.IndexByte(b[i:], '"'); q >= 0 {
			s.nextQuote = i + q
		} else {
			s.nextQuote = -1
		}
	}
	end := len(b)
	if s.nextQuote >= 0 {
		end = s.nextQuote
	}
	if bs := bytes.IndexByte(b[i:end], '\\'); bs >= 0 {
		s.keep(b[i : i+bs+1])
		s.escaped = true
		if s.inKey {
			s.keyLong = true // an escaped key is never one we look for
		}
		return i + bs + 1
	}
	if end == len(b) {
		s.keep(b[i:])
		return len(b)
	}
	s.keep(b[i : end+1])
	s.inString = false
	s.inKey = false
	s.inID = false
	return end + 1
}

// keep adds string bytes to the key or id being read, if any.
func (s *scanner) keep(b []byte) {
	switch {
	case s.inKey:
		if len(s.key)+len(b) > len("method")+1 {
			s.keyLong = true
			return
		}
		s.key = append(s.key, b...)
		if n := len(s.key); n > 0 && s.key[n-1] == '"' && !s.escaped {
			s.key = s.key[:n-1] // the closing quote
		}
	case s.inID:
		s.keepID(b)
	}
}

func (s *scanner) keepID(b []byte) {
	if s.idLong {
		return
	}
	if len(s.id)+len(b) > maxIDText {
		s.idLong = true
		s.id = s.id[:0]
		return
	}
	s.id = append(s.id, b...)
}

// rawID returns the frame's top-level id as sent, or nil if none was seen
// (or it was too long to keep). Valid until the next reset.
func (s *scanner) rawID() []byte {
	if s.idLong || len(s.id) == 0 || s.inID {
		return nil
	}
	return s.id
}
