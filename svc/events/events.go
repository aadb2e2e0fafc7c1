// Package events is Reelway's domain event bus: protobuf envelopes published to NATS
// JetStream on "reelway.events.<type>", with the event id as Nats-Msg-Id so a retried
// publish is stored once.
package events

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"time"

	eventsv1 "github.com/reelway/reelway/gen/reelway/events/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// SubjectPrefix starts every event subject.
const SubjectPrefix = "reelway.events."

// StreamName is the JetStream stream that stores every event.
const StreamName = "REELWAY_EVENTS"

// Name returns the dotted name of an event type: EVENT_TYPE_UPLOAD_COMPLETED → "upload.completed".
func Name(t eventsv1.EventType) string {
	s := strings.ToLower(strings.TrimPrefix(t.String(), "EVENT_TYPE_"))
	return strings.Replace(s, "_", ".", 1)
}

// Subject returns the NATS subject of an event type.
func Subject(t eventsv1.EventType) string {
	return SubjectPrefix + Name(t)
}

// NewID returns a fresh event id. Each event gets its own, so a user's retry is a new event
// while a republish of the same envelope is deduplicated.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func envelope(t eventsv1.EventType, source, subject string) *eventsv1.Event {
	return &eventsv1.Event{
		Id:        NewID(),
		Type:      t,
		Source:    source,
		Time:      timestamppb.New(time.Now()),
		SubjectId: subject,
	}
}

// VideoCreated builds a video.created event.
func VideoCreated(source, videoID, title string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_VIDEO_CREATED, source, videoID)
	e.Payload = &eventsv1.Event_VideoCreated{VideoCreated: &eventsv1.VideoCreated{VideoId: videoID, Title: title}}
	return e
}

// VideoUpdated builds a video.updated event.
func VideoUpdated(source, videoID, status string, fields []string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_VIDEO_UPDATED, source, videoID)
	e.Payload = &eventsv1.Event_VideoUpdated{VideoUpdated: &eventsv1.VideoUpdated{VideoId: videoID, Status: status, Fields: fields}}
	return e
}

// VideoDeleted builds a video.deleted event.
func VideoDeleted(source, videoID string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_VIDEO_DELETED, source, videoID)
	e.Payload = &eventsv1.Event_VideoDeleted{VideoDeleted: &eventsv1.VideoDeleted{VideoId: videoID}}
	return e
}

// UploadStarted builds an upload.started event.
func UploadStarted(source, videoID, filename string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_UPLOAD_STARTED, source, videoID)
	e.Payload = &eventsv1.Event_UploadStarted{UploadStarted: &eventsv1.UploadStarted{VideoId: videoID, Filename: filename}}
	return e
}

// UploadCompleted builds an upload.completed event.
func UploadCompleted(source, videoID string, size int64, sha256 string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_UPLOAD_COMPLETED, source, videoID)
	e.Payload = &eventsv1.Event_UploadCompleted{UploadCompleted: &eventsv1.UploadCompleted{VideoId: videoID, SizeBytes: size, Sha256: sha256}}
	return e
}

// UploadFailed builds an upload.failed event.
func UploadFailed(source, videoID, reason string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_UPLOAD_FAILED, source, videoID)
	e.Payload = &eventsv1.Event_UploadFailed{UploadFailed: &eventsv1.UploadFailed{VideoId: videoID, Reason: reason}}
	return e
}

// TranscodeRequested builds a transcode.requested event.
func TranscodeRequested(source, videoID, jobID string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_TRANSCODE_REQUESTED, source, videoID)
	e.Payload = &eventsv1.Event_TranscodeRequested{TranscodeRequested: &eventsv1.TranscodeRequested{VideoId: videoID, JobId: jobID}}
	return e
}

// TranscodeStarted builds a transcode.started event.
func TranscodeStarted(source, videoID, jobID string, attempt int32) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_TRANSCODE_STARTED, source, videoID)
	e.Payload = &eventsv1.Event_TranscodeStarted{TranscodeStarted: &eventsv1.TranscodeStarted{VideoId: videoID, JobId: jobID, Attempt: attempt}}
	return e
}

// TranscodeProgress builds a transcode.progress event.
func TranscodeProgress(source, videoID, jobID string, percent float64, rendition string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_TRANSCODE_PROGRESS, source, videoID)
	e.Payload = &eventsv1.Event_TranscodeProgress{TranscodeProgress: &eventsv1.TranscodeProgress{VideoId: videoID, JobId: jobID, Percent: percent, Rendition: rendition}}
	return e
}

// TranscodeCompleted builds a transcode.completed event.
func TranscodeCompleted(source, videoID, jobID string, renditions int32, duration float64) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_TRANSCODE_COMPLETED, source, videoID)
	e.Payload = &eventsv1.Event_TranscodeCompleted{TranscodeCompleted: &eventsv1.TranscodeCompleted{VideoId: videoID, JobId: jobID, Renditions: renditions, DurationSeconds: duration}}
	return e
}

// TranscodeFailed builds a transcode.failed event.
func TranscodeFailed(source, videoID, jobID, reason string, permanent bool) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_TRANSCODE_FAILED, source, videoID)
	e.Payload = &eventsv1.Event_TranscodeFailed{TranscodeFailed: &eventsv1.TranscodeFailed{VideoId: videoID, JobId: jobID, Reason: reason, Permanent: permanent}}
	return e
}

// VideoReady builds a video.ready event.
func VideoReady(source, videoID, playbackPath string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_VIDEO_READY, source, videoID)
	e.Payload = &eventsv1.Event_VideoReady{VideoReady: &eventsv1.VideoReady{VideoId: videoID, PlaybackPath: playbackPath}}
	return e
}

// UserRegistered builds a user.registered event.
func UserRegistered(source, userID string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_USER_REGISTERED, source, userID)
	e.Payload = &eventsv1.Event_UserRegistered{UserRegistered: &eventsv1.UserRegistered{UserId: userID}}
	return e
}

// ServiceRegistered builds a service.registered event.
func ServiceRegistered(source, instanceID, address string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_SERVICE_REGISTERED, source, instanceID)
	e.Payload = &eventsv1.Event_ServiceRegistered{ServiceRegistered: &eventsv1.ServiceRegistered{Service: source, InstanceId: instanceID, Address: address}}
	return e
}

// ServiceDeregistered builds a service.deregistered event.
func ServiceDeregistered(source, instanceID string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_SERVICE_DEREGISTERED, source, instanceID)
	e.Payload = &eventsv1.Event_ServiceDeregistered{ServiceDeregistered: &eventsv1.ServiceDeregistered{Service: source, InstanceId: instanceID}}
	return e
}

// JobDead builds a job.dead event: a job used up its attempts and was dead-lettered.
// subject is what the job was about (a video id for a transcode).
func JobDead(source, jobID, kind, subject string, attempts int32, reason string) *eventsv1.Event {
	e := envelope(eventsv1.EventType_EVENT_TYPE_JOB_DEAD, source, subject)
	e.Payload = &eventsv1.Event_JobDead{JobDead: &eventsv1.JobDead{JobId: jobID, Kind: kind, SubjectId: subject, Attempts: attempts, Reason: reason}}
	return e
}
