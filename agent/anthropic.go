package agent

import "errors"

// newAnthropic returns a backend speaking the Anthropic Messages API.
func newAnthropic(cfg ModelConfig, apiKey string) (Backend, error) {
	return nil, errors.New("anthropic backend: not implemented yet")
}
