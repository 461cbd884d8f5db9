//! `stockpipe bq`: the sql/ statements, rendered or submitted to BigQuery.

use clap::{Args, Subcommand};

#[derive(Args)]
pub struct SqlArgs {
    /// Google Cloud project of the dataset (default: $GOOGLE_CLOUD_PROJECT).
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", default_value = "my-project")]
    pub project: String,
    /// BigQuery dataset for the table and models.
    #[arg(long, default_value = "stockpipe")]
    pub dataset: String,
    /// The lake's bucket (as in --lake gs://BUCKET/PREFIX).
    #[arg(long, default_value = "stockpipe-lake")]
    pub bucket: String,
    /// The lake's prefix in the bucket.
    #[arg(long, default_value = "stockpipe")]
    pub prefix: String,
    /// The lake's objects are gzipped (written with lake.gzip = true): the external table reads
    /// them as GZIP. One table reads one kind.
    #[arg(long)]
    pub gzip: bool,
    /// The instrument of the single-series ARIMA (train_and_predict_timeseries); default: the one
    /// with the most ticks in the table.
    #[arg(long, value_name = "TOKEN")]
    pub instrument: Option<u64>,
    /// Only these statements (file names without .sql), in their usual order.
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub only: Vec<String>,
}

impl SqlArgs {
    fn params(&self) -> stockpipe::tools::bigquery::SqlParams {
        stockpipe::tools::bigquery::SqlParams {
            project: self.project.clone(),
            dataset: self.dataset.clone(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            gzip: self.gzip,
            instrument: self.instrument,
        }
    }
}

#[derive(Subcommand)]
pub enum BqCommand {
    /// Print the rendered statements, in the order `submit` runs them.
    Render(SqlArgs),
    /// Run the statements through the BigQuery REST API (Application Default Credentials), each
    /// to the end before the next; BigQuery's errors are printed as they come.
    Submit {
        #[command(flatten)]
        sql: SqlArgs,
        /// Location of the dataset (every call carries it).
        #[arg(long, default_value = "US")]
        location: String,
        /// Validate each statement without running it (dryRun).
        #[arg(long)]
        dry_run: bool,
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
            for (name, sql) in select(&args.only)? {
                println!("-- {name}.sql");
                println!("{}", render(name, sql, &args.params())?.trim_end());
                println!();
            }
            Ok(())
        }
        BqCommand::Submit {
            sql,
            location,
            dry_run,
            timeout_secs,
            endpoint,
        } => {
            let params = sql.params();
            let statements = select(&sql.only)?
                .into_iter()
                .map(|(name, text)| Ok((name, render(name, text, &params)?)))
                .collect::<Result<Vec<_>, stockpipe::tools::bigquery::BqError>>()?;
            let mut client = BqClient::new(&params.project, &location, endpoint.as_deref())?;
            client.timeout = std::time::Duration::from_secs(timeout_secs);
            for (name, text) in statements {
                eprintln!("{} {name} …", if dry_run { "checking" } else { "running" });
                let report = client.run(name, &text, dry_run).await?;
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }
    }
}
