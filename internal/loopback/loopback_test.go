package loopback

import (
	"net/http/httptest"
	"testing"
)

func TestHost(t *testing.T) {
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:8080", true},
		{"LOCALHOST:8080", true}, // the control API used to refuse this one
		{"LocalHost.", true},
		{"localhost.:80", true},
		{"127.0.0.1", true},
		{"127.0.0.1:1", true},
		{"127.1.2.3:1", true},
		{"[::1]:8080", true},
		{"::1", true},
		{"[::ffff:127.0.0.1]:80", true},
		{"", false},
		{":8080", false},
		{"0.0.0.0:8080", false},
		{"192.168.1.2:80", false},
		{"evil.example:80", false},
		{"localhost.evil.example", false},
		{"[::]:80", false},
	} {
		if got := Host(tt.host); got != tt.want {
			t.Errorf("Host(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestCheckRequestRefusesARebindingHostOrAForeignOrigin(t *testing.T) {
	for _, tt := range []struct {
		host, origin string
		ok           bool
	}{
		{"127.0.0.1:9", "", true},
		{"LOCALHOST:9", "http://localhost:9", true},
		{"[::1]:9", "https://127.0.0.1", true},
		{"attacker.example:9", "", false},
		{"127.0.0.1:9", "http://attacker.example", false},
		{"127.0.0.1:9", "null", false},
		{"127.0.0.1:9", "file://localhost", false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tt.host
		if tt.origin != "" {
			r.Header.Set("Origin", tt.origin)
		}
		if err := CheckRequest(r); (err == nil) != tt.ok {
			t.Errorf("Host %q Origin %q: error %v, want ok=%v", tt.host, tt.origin, err, tt.ok)
		}
	}
}
