// Package elicitcheck checks an answer to an elicitation (MCP's question
// to a user) against the schema the question asked with: the CLI checks
// what its user typed, the console what its page sent.
package elicitcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
)

// Validate checks v against rs, as JSON decodes it (the validator's
// numbers are float64), and says what does not fit without the
// validator's "validating root: ".
func Validate(rs *jsonschema.Resolved, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var decoded any
	if err := json.Unmarshal(data, &decoded); err != nil {
		return err
	}
	if err := rs.Validate(decoded); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "validating root: "))
	}
	return nil
}

// Format checks a string against the formats MCP's elicitation allows
// (email, uri, date, date-time; the schema validator takes formats as
// annotations only). Other formats pass.
func Format(format, s string) error {
	var err error
	switch format {
	case "email":
		var a *mail.Address
		if a, err = mail.ParseAddress(s); err == nil && a.Address != s {
			err = errors.New("not a bare address")
		}
	case "uri":
		var u *url.URL
		if u, err = url.Parse(s); err == nil && u.Scheme == "" {
			err = errors.New("no scheme, like https:")
		}
	case "date":
		_, err = time.Parse(time.DateOnly, s)
	case "date-time":
		_, err = time.Parse(time.RFC3339, s)
	}
	if err != nil {
		return fmt.Errorf("%q is not a %s: %v", s, format, err)
	}
	return nil
}

// Schema reads a question's requested schema (as JSON decodes it, or as
// the SDK holds it): an object, its type "object" when it names none.
func Schema(requested any) (*jsonschema.Schema, error) {
	data, err := json.Marshal(requested)
	if err != nil {
		return nil, err
	}
	var s jsonschema.Schema
	if string(data) != "null" {
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, err
		}
	}
	if s.Type == "" && s.Properties == nil {
		s.Type = "object"
	}
	if s.Type != "object" {
		return nil, fmt.Errorf("its type is %q, not object", s.Type)
	}
	return &s, nil
}
