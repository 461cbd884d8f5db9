//! `stockpipe bq`: the sql/ statements, rendered or submitted to BigQuery.

use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Args)]
pub struct SqlArgs {
    /// The pipeline's config file: the lake's bucket, prefix and gzip (`[lake] url`, `gzip`), the
    /// topic (`[kafka] topic`) and the bars' folder (`[aggregate] lake_prefix`) come from it (and
    /// from STOCKPIPE_<SECTION>_<KEY> variables, as for `run`); the flags below override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Google Cloud project of the dataset (default: $GOOGLE_CLOUD_PROJECT).
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", default_value = "my-project")]
    pub project: String,
    /// BigQuery dataset for the table and models.
    #[arg(long, default_value = "stockpipe")]
    pub dataset: String,
    /// The lake's bucket (as in --lake gs://BUCKET/PREFIX) [default: the config's lake, else
    /// stockpipe-lake].
    #[arg(long)]
    pub bucket: Option<String>,
    /// The lake's prefix in the bucket [default: the config's lake, else stockpipe].
    #[arg(long)]
    pub prefix: Option<String>,
    /// The lake's objects are gzipped (written with lake.gzip = true): the external table reads
    /// them as GZIP. One table reads one kind. [default: the config's lake.gzip]
    #[arg(long)]
    pub gzip: bool,
    /// The topic whose ticks the lake holds [default: the config's kafka.topic].
    #[arg(long)]
    pub topic: Option<String>,
    /// The bars' folder in the lake [default: the config's aggregate.lake_prefix].
    #[arg(long, value_name = "PREFIX")]
    pub bars_prefix: Option<String>,
    /// The instrument of the single-series ARIMA (train_and_predict_timeseries); default: the one
    /// with the most ticks in the table.
    #[arg(long, value_name = "TOKEN")]
    pub instrument: Option<u64>,
    /// Only these statements (file names without .sql), in their usual order.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub only: Vec<String>,
}

impl SqlArgs {
    /// The statements' parameters: the flags, over the config (file and environment), over the
    /// defaults.
    fn params(&self) -> anyhow::Result<stockpipe::tools::bigquery::SqlParams> {
        use stockpipe::sink::store::LakeLocation;
        let config =
            stockpipe::config::Config::load_with_env(self.config.as_deref(), std::env::vars())?;
        let (bucket, prefix) = match LakeLocation::parse(&config.lake.url) {
            Ok(LakeLocation::Gcs { bucket, prefix }) => (Some(bucket), Some(prefix)),
            _ => (None, None),
        };
        let pick = |flag: &Option<String>, configured: Option<String>, default: &str| {
            flag.clone()
                .or(configured.filter(|v| !v.is_empty()))
                .unwrap_or_else(|| default.to_string())
        };
        Ok(stockpipe::tools::bigquery::SqlParams {
            project: self.project.clone(),
            dataset: self.dataset.clone(),
            bucket: pick(&self.bucket, bucket, "stockpipe-lake"),
            prefix: pick(&self.prefix, prefix, "stockpipe"),
            gzip: self.gzip || config.lake.gzip,
            topic: pick(&self.topic, Some(config.kafka.topic), "stock-stream"),
            bars_prefix: pick(
                &self.bars_prefix,
                Some(config.aggregate.lake_prefix),
                "stock-bars",
            ),
            instrument: self.instrument,
        })
    }
}

#[derive(Subcommand)]
pub enum BqCommand {
    /// Print the rendered statements, in the order `submit` runs them.
    Render(SqlArgs),
    /// Run the statements through the BigQuery REST API (Application Default Credentials), each
    /// to the end before the next; BigQuery's errors are printed as they come. The dataset is
    /// created first (in --location) when it does not exist.
    Submit {
        #[command(flatten)]
        sql: SqlArgs,
        /// Location of the dataset (every call carries it; a dataset created is created there).
        #[arg(long, default_value = "US")]
        location: String,
        /// Validate each statement without running it (dryRun).
        #[arg(long)]
        dry_run: bool,
        /// Do not create a missing dataset: fail naming it.
        #[arg(long)]
        no_create_dataset: bool,
        /// Give up on a job after this long.
        #[arg(long, default_value_t = 900)]
        timeout_secs: u64,
        /// BigQuery endpoint (a local or test server, reached without credentials).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
}

pub async fn bq(command: BqCommand) -> anyhow::Result<()> {
    use stockpipe::tools::bigquery::{BqClient, render, select};
    match command {
        BqCommand::Render(args) => {
            let params = args.params()?;
            for (name, sql) in select(&args.only)? {
                println!("-- {name}.sql");
                println!("{}", render(name, sql, &params)?.trim_end());
                println!();
            }
            Ok(())
        }
        BqCommand::Submit {
            sql,
            location,
            dry_run,
            no_create_dataset,
            timeout_secs,
            endpoint,
        } => {
            let params = sql.params()?;
            let statements = select(&sql.only)?
                .into_iter()
                .map(|(name, text)| Ok((name, render(name, text, &params)?)))
                .collect::<Result<Vec<_>, stockpipe::tools::bigquery::BqError>>()?;
            let mut client = BqClient::new(&params.project, &location, endpoint.as_deref())?;
            client.timeout = std::time::Duration::from_secs(timeout_secs);
            // A dry run creates nothing: a missing dataset is named instead.
            if client
                .ensure_dataset(&params.dataset, !(no_create_dataset || dry_run))
                .await?
            {
                eprintln!(
                    "created the dataset {}:{} in {location}",
                    params.project, params.dataset
                );
            }
            for (name, text) in statements {
                eprintln!("{} {name} …", if dry_run { "checking" } else { "running" });
                let report = client.run(name, &text, dry_run).await?;
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }
    }
}
