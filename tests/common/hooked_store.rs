//! An `ObjectStore` that forwards every request to another store and lets a
//! test observe or alter puts, deletes and reads through a few hooks.

use std::fmt;
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// What a test does around the requests a [`HookedStore`] forwards. Every
/// hook defaults to doing nothing.
pub trait Hooks: fmt::Debug + Send + Sync + 'static {
    /// Names the wrapper in the store's `Display`: `{NAME}({inner})`.
    const NAME: &'static str;

    /// Awaited before a put reaches the inner store; an error is returned
    /// in place of storing the object.
    fn before_put<'a>(&'a self, _location: &'a Path) -> BoxFuture<'a, object_store::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Called when a put has finished, whether it stored the object or not.
    fn after_put(&self, _location: &Path) {}

    /// Called as a delete is handed to the inner store.
    fn before_delete(&self, _location: &Path) {}

    /// Called as the inner store reports a delete done.
    fn after_delete(&self, _location: &Path) {}

    /// Called for every get (and so every head and ranged read).
    fn on_get(&self, _location: &Path) {}

    /// Called for every listing, with or without a delimiter.
    fn on_list(&self, _prefix: Option<&Path>) {}
}

/// Forwards every request to `inner`, calling `hooks` on the way.
#[derive(Debug)]
pub struct HookedStore<H> {
    inner: Arc<dyn ObjectStore>,
    hooks: Arc<H>,
}

impl<H: Hooks> HookedStore<H> {
    pub fn new(inner: Arc<dyn ObjectStore>, hooks: Arc<H>) -> Self {
        Self { inner, hooks }
    }
}

impl<H: Hooks> fmt::Display for HookedStore<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", H::NAME, self.inner)
    }
}

// `ObjectStore` is declared with `#[async_trait]`; these are the signatures
// that macro generates, written out.
impl<H: Hooks> ObjectStore for HookedStore<H> {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'c, object_store::Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            let result = match self.hooks.before_put(location).await {
                Ok(()) => self.inner.put_opts(location, payload, opts).await,
                Err(error) => Err(error),
            };
            self.hooks.after_put(location);
            result
        })
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'c, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'c, object_store::Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.hooks.on_get(location);
        self.inner.get_opts(location, options)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let on_start = Arc::clone(&self.hooks);
        let on_done = Arc::clone(&self.hooks);
        let locations = locations
            .inspect(move |location| {
                if let Ok(location) = location {
                    on_start.before_delete(location);
                }
            })
            .boxed();
        self.inner
            .delete_stream(locations)
            .inspect(move |location| {
                if let Ok(location) = location {
                    on_done.after_delete(location);
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.hooks.on_list(prefix);
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'c, object_store::Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.hooks.on_list(prefix);
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: CopyOptions,
    ) -> BoxFuture<'d, object_store::Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.inner.copy_opts(from, to, options)
    }
}
