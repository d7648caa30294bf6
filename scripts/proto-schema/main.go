// Command proto-schema writes the table the embedded API server decodes
// Kubernetes protobuf request bodies with
// (crates/minicluster/src/api/proto/schema.txt), read off the real Go types
// of k8s.io/api by reflection: for every struct reachable from a served kind,
// each field's protobuf number (the `protobuf` tag), its JSON name and
// `omitempty` (the `json` tag), whether it is a pointer (a zero sent on the
// wire is then meant, not a default) and whether it is inlined. It also
// writes golden pairs (testdata/NAME.pb, the body client-go sends; NAME.json,
// what encoding/json makes of the same object) that the Rust decoder is
// checked against.
//
// Run from this directory: go run . ../../crates/minicluster/src/api/proto
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The kinds the embedded cluster serves (crates/minicluster/src/resources.rs)
// and the bodies its subresources take.
var roots = []struct {
	apiVersion, kind string
	obj              any
}{
	{"v1", "Namespace", corev1.Namespace{}},
	{"v1", "Node", corev1.Node{}},
	{"v1", "Pod", corev1.Pod{}},
	{"v1", "Service", corev1.Service{}},
	{"v1", "Event", corev1.Event{}},
	{"apps/v1", "Deployment", appsv1.Deployment{}},
	{"apps/v1", "ReplicaSet", appsv1.ReplicaSet{}},
	{"discovery.k8s.io/v1", "EndpointSlice", discoveryv1.EndpointSlice{}},
	{"policy/v1", "PodDisruptionBudget", policyv1.PodDisruptionBudget{}},
	{"policy/v1", "Eviction", policyv1.Eviction{}},
	{"autoscaling/v1", "Scale", autoscalingv1.Scale{}},
	{"meta.k8s.io/v1", "DeleteOptions", metav1.DeleteOptions{}},
}

// Types with their own JSON form, decoded by name in Rust.
var special = map[reflect.Type]string{
	reflect.TypeOf(metav1.Time{}):          "time",
	reflect.TypeOf(metav1.MicroTime{}):     "microtime",
	reflect.TypeOf(metav1.Duration{}):      "duration",
	reflect.TypeOf(intstr.IntOrString{}):   "intstr",
	reflect.TypeOf(resource.Quantity{}):    "quantity",
	reflect.TypeOf(runtime.RawExtension{}): "raw",
	reflect.TypeOf(metav1.FieldsV1{}):      "fieldsv1",
}

func typeName(t reflect.Type) string {
	p := t.PkgPath()
	p = strings.TrimPrefix(p, "k8s.io/api/")
	p = strings.TrimPrefix(p, "k8s.io/apimachinery/pkg/apis/")
	p = strings.TrimPrefix(p, "k8s.io/apimachinery/pkg/")
	return p + "." + t.Name()
}

type schema struct {
	seen  map[string]bool
	order []reflect.Type
}

func (s *schema) visit(t reflect.Type) {
	if _, ok := special[t]; ok {
		return
	}
	n := typeName(t)
	if s.seen[n] {
		return
	}
	s.seen[n] = true
	s.order = append(s.order, t)
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Tag.Get("protobuf") == "" {
			continue
		}
		e := f.Type
		for e.Kind() == reflect.Pointer || e.Kind() == reflect.Slice || e.Kind() == reflect.Map {
			if e.Kind() == reflect.Map {
				e = e.Elem()
				continue
			}
			e = e.Elem()
		}
		if e.Kind() == reflect.Struct {
			s.visit(e)
		}
	}
}

// scalar names a Go type's wire kind for the Rust decoder.
func scalar(t reflect.Type) string {
	if k, ok := special[t]; ok {
		return k
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "bool"
	case reflect.Int32:
		return "int32"
	case reflect.Int64, reflect.Int:
		return "int64"
	case reflect.Uint32:
		return "uint32"
	case reflect.Uint64:
		return "uint64"
	case reflect.Float64:
		return "double"
	case reflect.Struct:
		return "message=" + typeName(t)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "bytes"
		}
	}
	panic(fmt.Sprintf("unhandled type %v", t))
}

func field(f reflect.StructField) string {
	pb := strings.Split(f.Tag.Get("protobuf"), ",")
	number := pb[1]
	jsonTag := strings.Split(f.Tag.Get("json"), ",")
	name := jsonTag[0]
	flags := ""
	for _, o := range jsonTag[1:] {
		if o == "omitempty" {
			flags += "o"
		}
		if o == "inline" {
			flags += "i"
		}
		if o == "omitzero" {
			flags += "z"
		}
	}
	if f.Anonymous && name == "" && !strings.Contains(flags, "i") {
		flags += "i"
	}
	if name == "" {
		name = "-"
	}
	t := f.Type
	if t.Kind() == reflect.Pointer {
		flags += "p"
		t = t.Elem()
	}
	kind := ""
	switch {
	case t.Kind() == reflect.Map:
		kind = "map=" + scalar(t.Key()) + ">" + scalar(t.Elem())
	case t.Kind() == reflect.Slice && t.Elem().Kind() != reflect.Uint8:
		flags += "r"
		e := t.Elem()
		if e.Kind() == reflect.Pointer {
			e = e.Elem()
		}
		kind = scalar(e)
	default:
		kind = scalar(t)
	}
	if flags == "" {
		flags = "-"
	}
	return fmt.Sprintf("%s %s %s %s", number, name, kind, flags)
}

// golden objects: every special type, pointers to zero, an inlined source,
// maps of quantities, and the zero values encoding/json keeps or drops.
func golden() map[string]runtime.Object {
	zero32, zero64, no := int32(0), int64(0), false
	two := intstr.FromInt32(2)
	quarter := intstr.FromString("25%")
	created := metav1.Unix(1767225600, 0)
	deployment := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{
			Name: "web", Namespace: "default", CreationTimestamp: created,
			Labels:      map[string]string{"app": "web"},
			Annotations: map[string]string{"note": "a \"quoted\" value"},
			ManagedFields: []metav1.ManagedFieldsEntry{{
				Manager: "kubectl", Operation: metav1.ManagedFieldsOperationUpdate,
				APIVersion: "apps/v1", Time: &created, FieldsType: "FieldsV1",
				FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:spec":{"f:replicas":{}}}`)},
			}},
		},
		Spec: appsv1.DeploymentSpec{
			Replicas:             &zero32,
			RevisionHistoryLimit: &zero32,
			Selector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"app": "web"},
				MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"},
				}},
			},
			Strategy: appsv1.DeploymentStrategy{
				Type:          appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &two, MaxUnavailable: &quarter},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &zero64,
					AutomountServiceAccountToken:  &no,
					Containers: []corev1.Container{{
						Name: "app", Image: "rolltest-demo:v1",
						Args:  []string{"--port", "8080"},
						Ports: []corev1.ContainerPort{{ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
						Env:   []corev1.EnvVar{{Name: "A", Value: ""}},
						Resources: corev1.ResourceRequirements{
							Limits:   corev1.ResourceList{"memory": resource.MustParse("64Mi")},
							Requests: corev1.ResourceList{"cpu": resource.MustParse("100m")},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
								Path: "/ready", Port: intstr.FromString("http"),
							}},
							PeriodSeconds: 1,
						},
						Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
							Exec: &corev1.ExecAction{Command: []string{"sleep", "5"}},
						}},
						SecurityContext: &corev1.SecurityContext{RunAsUser: &zero64, Privileged: &no},
					}},
					Volumes: []corev1.Volume{{
						Name:         "scratch",
						VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: resource.NewQuantity(1<<20, resource.BinarySI)}},
					}},
				},
			},
		},
	}
	ready, serving := true, false
	port, name, proto := int32(8080), "http", corev1.ProtocolTCP
	slice := &discoveryv1.EndpointSlice{
		TypeMeta:    metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"},
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abc"},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"127.0.1.2"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving},
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
	event := &corev1.Event{
		TypeMeta:       metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta:     metav1.ObjectMeta{Name: "web.1", Namespace: "default"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Name: "web-1"},
		Reason:         "Killing", Message: "Stopping container app", Type: "Normal", Count: 1,
		FirstTimestamp: created, EventTime: metav1.NewMicroTime(created.Add(1234567000)),
	}
	grace := int64(0)
	eviction := &policyv1.Eviction{
		TypeMeta:      metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
		ObjectMeta:    metav1.ObjectMeta{Name: "web-1", Namespace: "default"},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: &grace},
	}
	pdb := &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &two,
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		},
	}
	return map[string]runtime.Object{
		"deployment": deployment, "endpointslice": slice, "event": event,
		"eviction": eviction, "pdb": pdb,
	}
}

// envelope is what client-go's protobuf serializer writes: the magic, then a
// runtime.Unknown carrying the type and the object's own encoding.
func envelope(obj runtime.Object) []byte {
	type marshaler interface{ Marshal() ([]byte, error) }
	raw, err := obj.(marshaler).Marshal()
	if err != nil {
		panic(err)
	}
	gvk := obj.GetObjectKind().GroupVersionKind()
	unknown := runtime.Unknown{
		TypeMeta: runtime.TypeMeta{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind},
		Raw:      raw,
	}
	body, err := unknown.Marshal()
	if err != nil {
		panic(err)
	}
	return append([]byte{'k', '8', 's', 0}, body...)
}

func main() {
	out := os.Args[1]
	s := &schema{seen: map[string]bool{}}
	var b bytes.Buffer
	b.WriteString("# Generated by scripts/proto-schema from k8s.io/api v0.37.2: do not edit.\n")
	b.WriteString("# kind APIVERSION KIND TYPE, then per message: message TYPE and its fields,\n")
	b.WriteString("# NUMBER JSON-NAME KIND FLAGS (o omitempty, z omitzero,\n# p pointer, r repeated, i inline).\n")
	for _, r := range roots {
		t := reflect.TypeOf(r.obj)
		s.visit(t)
		fmt.Fprintf(&b, "kind %s %s %s\n", r.apiVersion, r.kind, typeName(t))
	}
	sort.Slice(s.order, func(i, j int) bool { return typeName(s.order[i]) < typeName(s.order[j]) })
	for _, t := range s.order {
		fmt.Fprintf(&b, "message %s\n", typeName(t))
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Tag.Get("protobuf") == "" {
				continue
			}
			fmt.Fprintf(&b, "  %s\n", field(f))
		}
	}
	if err := os.WriteFile(filepath.Join(out, "schema.txt"), b.Bytes(), 0o644); err != nil {
		panic(err)
	}
	for name, obj := range golden() {
		j, err := json.Marshal(obj)
		if err != nil {
			panic(err)
		}
		dir := filepath.Join(out, "testdata")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			panic(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".pb"), envelope(obj), 0o644); err != nil {
			panic(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".json"), append(j, '\n'), 0o644); err != nil {
			panic(err)
		}
	}
}
