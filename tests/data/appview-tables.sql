-- appview-tables.sql: the tables of the appview sluice writes, as the
-- appview creates them: table and column names, types, defaults, keys and
-- its indexes under its own names. Facts only, rendered from the catalog
-- of a database the appview created; the drop-in test (30) loads it before
-- `sluiced --init-schema` and checks that sluice adds no index the
-- appview's tables already have under another name.

CREATE TABLE users (
    did character varying(255) NOT NULL,
    handle character varying(255) NOT NULL,
    display_name character varying(255),
    avatar_url text,
    banner_url text,
    description text,
    profile_record jsonb,
    pinned_post jsonb,
    search_vector tsvector,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (did)
);
CREATE INDEX idx_users_created_at ON users USING btree (created_at);
CREATE INDEX idx_users_handle ON users USING btree (handle);
CREATE INDEX idx_users_search_vector ON users USING gin (search_vector);

CREATE TABLE posts (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    author_did character varying(255) NOT NULL,
    text text NOT NULL,
    langs jsonb,
    parent_uri character varying(512),
    parent_cid character varying(255),
    root_uri character varying(512),
    root_cid character varying(255),
    embed jsonb,
    facets jsonb,
    violates_thread_gate boolean NOT NULL DEFAULT false,
    violates_embedding_rules boolean NOT NULL DEFAULT false,
    has_thread_gate boolean NOT NULL DEFAULT false,
    has_post_gate boolean NOT NULL DEFAULT false,
    tags jsonb NOT NULL DEFAULT '[]'::jsonb,
    search_vector tsvector,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    commit_time timestamp without time zone,
    commit_seq character varying(32),
    commit_rev character varying(64),
    CONSTRAINT posts_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_posts_author_did ON posts USING btree (author_did);
CREATE INDEX idx_posts_indexed_at ON posts USING btree (indexed_at);
CREATE INDEX idx_posts_parent_uri ON posts USING btree (parent_uri);
CREATE INDEX idx_posts_root_uri ON posts USING btree (root_uri);
CREATE INDEX idx_posts_search_vector ON posts USING gin (search_vector);

CREATE TABLE post_aggregations (
    post_uri character varying(512) NOT NULL,
    like_count integer NOT NULL DEFAULT 0,
    repost_count integer NOT NULL DEFAULT 0,
    reply_count integer NOT NULL DEFAULT 0,
    bookmark_count integer NOT NULL DEFAULT 0,
    quote_count integer NOT NULL DEFAULT 0,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT post_aggregations_pkey PRIMARY KEY (post_uri)
);
CREATE INDEX idx_post_aggregations_bookmark_count ON post_aggregations USING btree (bookmark_count);
CREATE INDEX idx_post_aggregations_like_count ON post_aggregations USING btree (like_count);
CREATE INDEX idx_post_aggregations_quote_count ON post_aggregations USING btree (quote_count);
CREATE INDEX idx_post_aggregations_reply_count ON post_aggregations USING btree (reply_count);
CREATE INDEX idx_post_aggregations_repost_count ON post_aggregations USING btree (repost_count);

CREATE TABLE feed_items (
    uri character varying(512) NOT NULL,
    post_uri character varying(512) NOT NULL,
    originator_did character varying(255) NOT NULL,
    type character varying(32) NOT NULL,
    sort_at timestamp without time zone NOT NULL,
    cid character varying(255) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT feed_items_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_feed_items_originator ON feed_items USING btree (originator_did);
CREATE INDEX idx_feed_items_originator_sort ON feed_items USING btree (originator_did, sort_at);
CREATE INDEX idx_feed_items_post ON feed_items USING btree (post_uri);
CREATE INDEX idx_feed_items_sort_at ON feed_items USING btree (sort_at);
CREATE INDEX idx_feed_items_type ON feed_items USING btree (type);

CREATE TABLE likes (
    uri character varying(512) NOT NULL,
    user_did character varying(255) NOT NULL,
    post_uri character varying(512) NOT NULL,
    subject_cid character varying(255),
    via jsonb,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    commit_time timestamp without time zone,
    commit_seq character varying(32),
    commit_rev character varying(64),
    CONSTRAINT likes_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_likes_post_uri ON likes USING btree (post_uri);
CREATE INDEX idx_likes_user_did ON likes USING btree (user_did);
CREATE UNIQUE INDEX unique_like_user_post ON likes USING btree (user_did, post_uri);

CREATE TABLE reposts (
    uri character varying(512) NOT NULL,
    user_did character varying(255) NOT NULL,
    post_uri character varying(512) NOT NULL,
    subject_cid character varying(255),
    via jsonb,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    commit_time timestamp without time zone,
    commit_seq character varying(32),
    commit_rev character varying(64),
    CONSTRAINT reposts_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_reposts_post_uri ON reposts USING btree (post_uri);
CREATE INDEX idx_reposts_user_did ON reposts USING btree (user_did);
CREATE UNIQUE INDEX unique_repost_user_post ON reposts USING btree (user_did, post_uri);

CREATE TABLE follows (
    uri character varying(512) NOT NULL,
    follower_did character varying(255) NOT NULL,
    following_did character varying(255) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    commit_time timestamp without time zone,
    commit_seq character varying(32),
    commit_rev character varying(64),
    CONSTRAINT follows_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_follows_follower ON follows USING btree (follower_did);
CREATE INDEX idx_follows_following ON follows USING btree (following_did);
CREATE UNIQUE INDEX unique_follow_follower_following ON follows USING btree (follower_did, following_did);

CREATE TABLE blocks (
    uri character varying(512) NOT NULL,
    blocker_did character varying(255) NOT NULL,
    blocked_did character varying(255) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    commit_time timestamp without time zone,
    commit_seq character varying(32),
    commit_rev character varying(64),
    CONSTRAINT blocks_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_blocks_blocked ON blocks USING btree (blocked_did);
CREATE INDEX idx_blocks_blocker ON blocks USING btree (blocker_did);
CREATE UNIQUE INDEX unique_block_blocker_blocked ON blocks USING btree (blocker_did, blocked_did);

CREATE TABLE quotes (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    post_uri character varying(512) NOT NULL,
    quoted_uri character varying(512) NOT NULL,
    quoted_cid character varying(255),
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT quotes_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_quotes_post ON quotes USING btree (post_uri);
CREATE INDEX idx_quotes_quoted ON quotes USING btree (quoted_uri);
CREATE UNIQUE INDEX unique_quote_post_quoted ON quotes USING btree (post_uri, quoted_uri);

CREATE TABLE notifications (
    id serial NOT NULL,
    uri character varying(512) NOT NULL,
    recipient_did character varying(255) NOT NULL,
    author_did character varying(255) NOT NULL,
    reason character varying(64) NOT NULL,
    reason_subject character varying(512),
    cid character varying(255),
    is_read boolean NOT NULL DEFAULT false,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT notifications_pkey PRIMARY KEY (id),
    CONSTRAINT notifications_uri_unique UNIQUE (uri)
);
CREATE INDEX idx_notifications_created_at ON notifications USING btree (created_at);
CREATE INDEX idx_notifications_indexed_at ON notifications USING btree (indexed_at);
CREATE INDEX idx_notifications_recipient ON notifications USING btree (recipient_did);
CREATE INDEX idx_notifications_recipient_read ON notifications USING btree (recipient_did, is_read);

CREATE TABLE lists (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    creator_did character varying(255) NOT NULL,
    name character varying(255) NOT NULL,
    purpose character varying(64) NOT NULL,
    description text,
    avatar_url text,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT lists_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_lists_creator ON lists USING btree (creator_did);
CREATE INDEX idx_lists_indexed_at ON lists USING btree (indexed_at);
CREATE INDEX idx_lists_purpose ON lists USING btree (purpose);

CREATE TABLE list_items (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    list_uri character varying(512) NOT NULL,
    subject_did character varying(255) NOT NULL,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT list_items_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_list_items_list ON list_items USING btree (list_uri);
CREATE INDEX idx_list_items_subject ON list_items USING btree (subject_did);
CREATE UNIQUE INDEX unique_list_item ON list_items USING btree (list_uri, subject_did);

CREATE TABLE feed_generators (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    creator_did character varying(255) NOT NULL,
    did character varying(255) NOT NULL,
    display_name character varying(255) NOT NULL,
    description text,
    avatar_url text,
    like_count integer NOT NULL DEFAULT 0,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT feed_generators_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_feed_generators_creator ON feed_generators USING btree (creator_did);
CREATE INDEX idx_feed_generators_did ON feed_generators USING btree (did);
CREATE INDEX idx_feed_generators_indexed_at ON feed_generators USING btree (indexed_at);
CREATE INDEX idx_feed_generators_like_count ON feed_generators USING btree (like_count);

CREATE TABLE starter_packs (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    creator_did character varying(255) NOT NULL,
    name character varying(255) NOT NULL,
    description text,
    list_uri character varying(512),
    feeds jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT starter_packs_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_starter_packs_creator ON starter_packs USING btree (creator_did);
CREATE INDEX idx_starter_packs_indexed_at ON starter_packs USING btree (indexed_at);
CREATE INDEX idx_starter_packs_list ON starter_packs USING btree (list_uri);

CREATE TABLE labeler_services (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    creator_did character varying(255) NOT NULL,
    policies jsonb NOT NULL,
    like_count integer NOT NULL DEFAULT 0,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT labeler_services_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_labeler_services_creator ON labeler_services USING btree (creator_did);
CREATE INDEX idx_labeler_services_indexed_at ON labeler_services USING btree (indexed_at);
CREATE INDEX idx_labeler_services_like_count ON labeler_services USING btree (like_count);

CREATE TABLE thread_gates (
    post_uri character varying(512) NOT NULL,
    owner_did character varying(255) NOT NULL,
    allow_mentions boolean NOT NULL DEFAULT true,
    allow_following boolean NOT NULL DEFAULT true,
    allow_list_members boolean NOT NULL DEFAULT false,
    allow_list_uris jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT thread_gates_pkey PRIMARY KEY (post_uri)
);
CREATE INDEX idx_thread_gates_owner ON thread_gates USING btree (owner_did);

CREATE TABLE post_gates (
    post_uri character varying(512) NOT NULL,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    embedding_rules jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT post_gates_pkey PRIMARY KEY (post_uri)
);
CREATE INDEX idx_post_gates_created_at ON post_gates USING btree (created_at);

CREATE TABLE post_viewer_states (
    post_uri character varying(512) NOT NULL,
    viewer_did character varying(255) NOT NULL,
    like_uri character varying(512),
    repost_uri character varying(512),
    bookmarked boolean NOT NULL DEFAULT false,
    thread_muted boolean NOT NULL DEFAULT false,
    reply_disabled boolean NOT NULL DEFAULT false,
    embedding_disabled boolean NOT NULL DEFAULT false,
    pinned boolean NOT NULL DEFAULT false,
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now()
);
CREATE INDEX idx_post_viewer_states_post ON post_viewer_states USING btree (post_uri);
CREATE INDEX idx_post_viewer_states_viewer ON post_viewer_states USING btree (viewer_did);
CREATE UNIQUE INDEX idx_post_viewer_states_post_viewer ON post_viewer_states USING btree (post_uri, viewer_did);

CREATE TABLE thread_contexts (
    post_uri character varying(512) NOT NULL,
    root_author_like_uri character varying(512),
    created_at timestamp without time zone NOT NULL DEFAULT now(),
    updated_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT thread_contexts_pkey PRIMARY KEY (post_uri)
);
CREATE INDEX idx_thread_contexts_root_author_like ON thread_contexts USING btree (root_author_like_uri);

CREATE TABLE generic_records (
    uri character varying(512) NOT NULL,
    cid character varying(255) NOT NULL,
    author_did character varying(255) NOT NULL,
    record_type character varying(255) NOT NULL,
    record jsonb NOT NULL,
    created_at timestamp without time zone NOT NULL,
    indexed_at timestamp without time zone NOT NULL DEFAULT now(),
    CONSTRAINT generic_records_pkey PRIMARY KEY (uri)
);
CREATE INDEX idx_generic_records_author ON generic_records USING btree (author_did);
CREATE INDEX idx_generic_records_created_at ON generic_records USING btree (created_at);
CREATE INDEX idx_generic_records_type ON generic_records USING btree (record_type);
