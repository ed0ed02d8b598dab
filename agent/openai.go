package agent

import "errors"

// newOpenAI returns a backend speaking the OpenAI chat-completions API.
func newOpenAI(cfg ModelConfig, apiKey string) (Backend, error) {
	return nil, errors.New("openai backend: not implemented yet")
}
