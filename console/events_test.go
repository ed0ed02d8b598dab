package console

import (
	"fmt"
	"testing"
	"time"

	"github.com/mcpmesh/mcpmesh/audit"
	"github.com/mcpmesh/mcpmesh/tasks"
)

// Under load an update keeps every refusal and the newest of the rest.
func TestAuditItemsKeepRefusals(t *testing.T) {
	var recs []audit.Record
	for i := range 10 {
		o := audit.OK
		if i == 1 || i == 8 {
			o = audit.Refused
		}
		recs = append(recs, audit.Record{Caller: "p", Server: "node", Method: "tools/call", Name: fmt.Sprint(i), Outcome: o, Reason: "rate"})
	}
	items, skipped := auditItems(recs, 101, 3, map[string]string{}, func(s string) string { return s })
	var got string
	for _, it := range items {
		got += fmt.Sprintf("%s@%d ", it.Record.Name, it.Seq)
	}
	if want := "1@102 6@107 7@108 8@109 9@110 "; got != want || skipped != 5 {
		t.Errorf("items %q, skipped %d; want %q, 5", got, skipped, want)
	}
}

// The list keeps the tasks whose caller's task is elsewhere: the roots of
// trees begun here and the calls from other nodes, newest first.
func TestTaskViewKeepsTopLevelTasks(t *testing.T) {
	all := []tasks.Task{
		{ID: "r1", Role: tasks.Call, State: tasks.Completed},
		{ID: "s1", Role: tasks.Served, Parent: "r1", State: tasks.Completed}, // below r1, here
		{ID: "s2", Role: tasks.Served, Parent: "far", State: tasks.Working},  // called from another node
	}
	for i := range all {
		all[i].Started = all[0].Started.Add(time.Duration(i) * time.Second)
	}
	v := taskView(all)
	if len(v.Items) != 2 || v.Items[0].ID != "s2" || v.Items[1].ID != "r1" || v.Running != 1 || v.Total != 3 {
		t.Errorf("%+v", v)
	}
}
