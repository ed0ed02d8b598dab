package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/console"
)

// startCall starts a call from the page and returns its tree's ID.
func startCall(t *testing.T, c *client, peer, tool, args string) string {
	t.Helper()
	code, body := status(t, c.post("/api/call", `{"peer":"`+peer+`","server":"node","tool":"`+tool+`","args":`+args+`}`, nil))
	var a struct {
		Task  string `json:"task"`
		Error string `json:"error"`
	}
	json.Unmarshal([]byte(body), &a)
	if code != http.StatusAccepted || a.Task == "" {
		t.Fatalf("call %s: %d %s", tool, code, body)
	}
	return a.Task
}

type questionsEvent struct {
	Questions []console.Question `json:"questions"`
	Links     []console.Question `json:"links"`
}

// follow opens the call's questions stream; cancel closes it, as a page
// that goes away.
func follow(t *testing.T, c *client, task string) (<-chan event, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	resp := c.request(ctx, http.MethodGet, "/api/calls/"+task+"/questions", "", nil)
	if resp.StatusCode != http.StatusOK {
		cancel()
		code, body := status(t, resp)
		t.Fatalf("follow questions: %d %s", code, body)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return events(resp), func() { cancel(); resp.Body.Close() }
}

// nextQuestions waits for a questions event that pleases ok.
func nextQuestions(t *testing.T, ch <-chan event, what string, ok func(questionsEvent) bool) questionsEvent {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case e, open := <-ch:
			if !open {
				t.Fatalf("the questions stream ended before %s", what)
			}
			if e.name != "questions" {
				continue
			}
			var q questionsEvent
			if err := json.Unmarshal([]byte(e.data), &q); err != nil {
				t.Fatalf("questions event %s: %v", e.data, err)
			}
			if ok(q) {
				return q
			}
		case <-deadline:
			t.Fatalf("no questions event with %s", what)
		}
	}
}

func oneQuestion(message string) func(questionsEvent) bool {
	return func(q questionsEvent) bool {
		return len(q.Questions) == 1 && strings.HasPrefix(q.Questions[0].Elicit.Message, message)
	}
}

// resultOf follows the call's tree until its root has a result, and
// returns the result's text, or the error the tree ended with.
func resultOf(t *testing.T, c *client, task string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp := c.request(ctx, http.MethodGet, "/api/tasks/"+task+"/events", "", nil)
	defer resp.Body.Close()
	for e := range events(resp) {
		if e.name != "tree" {
			continue
		}
		var v struct {
			Tree struct {
				State string `json:"state"`
				Error string `json:"error"`
			} `json:"tree"`
			Result struct {
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"result"`
		}
		if err := json.Unmarshal([]byte(e.data), &v); err != nil {
			t.Fatal(err)
		}
		if len(v.Result.Content) > 0 {
			return v.Result.Content[0].Text
		}
		if v.Tree.State == "failed" || v.Tree.State == "cancelled" {
			return v.Tree.State + ": " + v.Tree.Error
		}
	}
	t.Fatalf("call %s: no result in its tree's stream", task)
	return ""
}

// TestQuestionsOfACallFromThePage: a call from the page to alpha's dinner,
// whose leaf on charlie (two hops down) asks the caller twice. The page
// sees each question, wrong answers are refused here with the reason and
// leave the question open, and the answers reach the leaf.
func TestQuestionsOfACallFromThePage(t *testing.T) {
	m := newTestMesh(t)
	_, login := startConsole(t, m.a, console.Options{Interval: 50 * time.Millisecond})
	_, _, c := testConsoleClient(t, login)

	task := startCall(t, c, m.a.ID().String(), "dinner", `{"restaurant":"Chez Max"}`)
	qs, _ := follow(t, c, task)
	q := nextQuestions(t, qs, "charlie's question", oneQuestion("Book a table at Chez Max for how many people?")).Questions[0]
	if q.ID == "" || q.Elicit.Meta != nil {
		t.Errorf("question %+v: want an ID, and no _meta of the mesh's", q)
	}
	schema, _ := json.Marshal(q.Elicit.RequestedSchema)
	if !strings.Contains(string(schema), `"people"`) || !strings.Contains(string(schema), `"19:00"`) {
		t.Errorf("the question's schema: %s", schema)
	}

	answer := func(body string) (int, string) {
		return status(t, c.post("/api/calls/"+task+"/answer", body, nil))
	}
	for _, tc := range []struct{ body, says string }{
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":"four","name":"Ann","time":"19:00"}}`, "people: want an integer, got a string"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":2.5,"name":"Ann","time":"19:00"}}`, "people: want an integer"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":2,"time":"19:00"}}`, "name is required"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":2,"name":"Ann","time":"19:00","card":"4111"}}`, "card\\\" is not a field"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":2,"name":"Ann","time":"19:00","terrace":"yes"}}`, "terrace: want a boolean"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":2,"name":"Ann","time":"19:00","budget":"lots"}}`, "budget: want a number"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":2,"name":"Ann","time":"18:00"}}`, "time"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":40,"name":"Ann","time":"19:00"}}`, "people"},
		{`{"question":"` + q.ID + `","action":"accept","content":{"people":2,"name":"Ann","time":"19:00","email":"ann at home"}}`, "email: \\\"ann at home\\\" is not a email"},
		{`{"question":"` + q.ID + `","action":"decline","content":{"people":2}}`, "has no content"},
		{`{"question":"` + q.ID + `","action":"maybe"}`, "want accept, decline or cancel"},
	} {
		if code, body := answer(tc.body); code != http.StatusBadRequest || !strings.Contains(body, tc.says) {
			t.Errorf("answer %s: %d %s, want 400 saying %q", tc.body, code, body, tc.says)
		}
	}
	if code, body := answer(`{"question":"nope","action":"decline"}`); code != http.StatusNotFound {
		t.Errorf("answer to no question: %d %s, want 404", code, body)
	}
	// The console's protections hold on the new endpoints.
	if code, body := status(t, c.post("/api/calls/"+task+"/answer", `{"question":"`+q.ID+`","action":"decline"}`, map[string]string{"Origin": "http://evil.example"})); code != http.StatusForbidden {
		t.Errorf("an answer from another site: %d %s, want 403", code, body)
	}
	stranger := &client{t: t, base: c.base, http: c.http}
	if code, body := status(t, stranger.post("/api/calls/"+task+"/answer", `{"question":"`+q.ID+`","action":"decline"}`, nil)); code != http.StatusUnauthorized {
		t.Errorf("an answer without the session: %d %s, want 401", code, body)
	}
	if code, body := status(t, stranger.get("/api/calls/"+task+"/questions", nil)); code != http.StatusUnauthorized {
		t.Errorf("the questions without the session: %d %s, want 401", code, body)
	}

	if code, body := answer(`{"question":"` + q.ID + `","action":"accept","content":{"people":4,"name":"Ann","time":"20:00","terrace":true,"budget":35.5}}`); code != http.StatusOK {
		t.Fatalf("a good answer: %d %s", code, body)
	}
	if code, _ := answer(`{"question":"` + q.ID + `","action":"decline"}`); code != http.StatusNotFound {
		t.Errorf("a second answer to the same question: %d, want 404", code)
	}
	q2 := nextQuestions(t, qs, "the second question", oneQuestion("Shall I confirm it?")).Questions[0]
	if code, body := answer(`{"question":"` + q2.ID + `","action":"accept","content":{"confirm":true}}`); code != http.StatusOK {
		t.Fatalf("the second answer: %d %s", code, body)
	}
	if got, want := resultOf(t, c, task), "booked for 4 (name Ann, time 20:00, terrace true, budget 35.5); confirm: accept true"; got != want {
		t.Errorf("result %q, want %q", got, want)
	}
	next(t, qs, "end")
}

// TestQuestionDeclinedWhenNoPageFollows: a question to a call that no page
// follows, or whose page went away, is declined after AskWait, not left
// waiting.
func TestQuestionDeclinedWhenNoPageFollows(t *testing.T) {
	m := newTestMesh(t)
	const wait = 300 * time.Millisecond
	_, login := startConsole(t, m.a, console.Options{Interval: 50 * time.Millisecond, AskWait: wait})
	_, _, c := testConsoleClient(t, login)
	self := m.a.ID().String()

	t.Run("never followed", func(t *testing.T) {
		task := startCall(t, c, self, "ask", `{}`)
		if got := resultOf(t, c, task); got != "not booked: the user chose decline" {
			t.Errorf("result %q, want the question declined", got)
		}
	})
	t.Run("page closed", func(t *testing.T) {
		task := startCall(t, c, self, "ask", `{}`)
		qs, closePage := follow(t, c, task)
		nextQuestions(t, qs, "the question", oneQuestion("How many people?"))
		closePage()
		if got := resultOf(t, c, task); got != "not booked: the user chose decline" {
			t.Errorf("result %q, want the question declined", got)
		}
	})
	t.Run("answered decline", func(t *testing.T) {
		task := startCall(t, c, self, "ask", `{}`)
		qs, _ := follow(t, c, task)
		q := nextQuestions(t, qs, "the question", oneQuestion("How many people?")).Questions[0]
		if code, body := status(t, c.post("/api/calls/"+task+"/answer", `{"question":"`+q.ID+`","action":"cancel"}`, nil)); code != http.StatusOK {
			t.Fatalf("cancel: %d %s", code, body)
		}
		if got := resultOf(t, c, task); got != "not booked: the user chose cancel" {
			t.Errorf("result %q", got)
		}
	})
}

// TestQuestionEndsWithItsCall: a question open when its call's tree is
// cancelled goes with it; the page's stream ends and an answer finds none.
func TestQuestionEndsWithItsCall(t *testing.T) {
	m := newTestMesh(t)
	_, login := startConsole(t, m.a, console.Options{Interval: 50 * time.Millisecond})
	_, _, c := testConsoleClient(t, login)
	task := startCall(t, c, m.a.ID().String(), "dinner", `{"restaurant":"Chez Max"}`)
	qs, _ := follow(t, c, task)
	q := nextQuestions(t, qs, "the question", oneQuestion("Book a table")).Questions[0]
	if code, body := status(t, c.post("/api/tasks/"+task+"/cancel", "{}", nil)); code != http.StatusOK {
		t.Fatalf("cancel: %d %s", code, body)
	}
	next(t, qs, "end")
	if code, body := status(t, c.post("/api/calls/"+task+"/answer", `{"question":"`+q.ID+`","action":"decline"}`, nil)); code != http.StatusNotFound {
		t.Errorf("an answer after the call ended: %d %s, want 404", code, body)
	}
}

// TestURLQuestionFromThePage: a URL-mode question shows its link; accepted,
// it stays listed until its server says the step is done.
func TestURLQuestionFromThePage(t *testing.T) {
	m := newTestMesh(t)
	_, login := startConsole(t, m.a, console.Options{Interval: 50 * time.Millisecond})
	_, _, c := testConsoleClient(t, login)
	task := startCall(t, c, m.a.ID().String(), "ask", `{"url":true}`)
	qs, _ := follow(t, c, task)
	q := nextQuestions(t, qs, "the link", oneQuestion("Sign in to book")).Questions[0]
	if q.Elicit.Mode != "url" || q.Elicit.URL != "https://example.com/signin" {
		t.Fatalf("question %+v", q.Elicit)
	}
	if code, body := status(t, c.post("/api/calls/"+task+"/answer", `{"question":"`+q.ID+`","action":"accept","content":{"x":1}}`, nil)); code != http.StatusBadRequest {
		t.Errorf("a URL answer with content: %d %s, want 400", code, body)
	}
	if code, body := status(t, c.post("/api/calls/"+task+"/answer", `{"question":"`+q.ID+`","action":"accept"}`, nil)); code != http.StatusOK {
		t.Fatalf("accept: %d %s", code, body)
	}
	nextQuestions(t, qs, "the link completed", func(e questionsEvent) bool {
		return len(e.Questions) == 0 && len(e.Links) == 1 && e.Links[0].ID == q.ID && e.Links[0].Completed
	})
	close(m.release)
	if got := resultOf(t, c, task); got != "signed in" {
		t.Errorf("result %q", got)
	}
}
